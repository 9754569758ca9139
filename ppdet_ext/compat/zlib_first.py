"""Import ``zlib`` before ``paddle``.

Failure fixed: on Paddle 2.6.2, ``libpaddle.so`` exports zlib symbols of its own; when
``paddle`` is imported before Python's ``zlib`` extension, a later ``import ppdet`` binds
zlib calls to Paddle's copies and the process dies with SIGSEGV (measured:
``python -c "import paddle; import ppdet"`` -> "SIGSEGV (@0x0) received").
Importing ``zlib`` first makes the dynamic linker resolve it to the system libz.
Nothing to undo; it only has to happen early, which is why ``ppdet_ext`` imports this
module before anything else and ``deploy`` does the same.
"""
import zlib  # noqa: F401
