"""Deployment runtime: run an exported detector directory on a list of images.

The ``deploy/`` folder installs as the package ``ppdet_ext_deploy`` (the generic name
``deploy`` is not claimed in site-packages); inside it, imports are relative, so the folder
also works as ``deploy`` from a checkout (the rknn worker venv runs it that way).

``ppdet_ext_deploy`` reads only an export directory (``model.pdmodel``/``model.pdiparams`` or
``model.onnx`` plus ``infer_cfg.yml``, see ``docs/export_format.md``) and imports nothing
from training code (no ``ppdet``, no ``ppdet_ext``). It is also where the training side
finds the shared concepts it must not duplicate: the export contract (``meta``), the image
lister (``imageio.list_images``) and the comparison and timing helpers (``compare``,
``timing``).

Import order matters on Paddle 2.6.2: ``libpaddle.so`` exports zlib symbols of its own, and
if ``paddle`` is loaded before Python's ``zlib`` extension, later imports can bind zlib calls
to Paddle's copies and segfault. ``ppdet_ext_deploy`` therefore imports ``zlib`` first, itself, before
any submodule can pull in ``paddle``.

Public API::

    from ppdet_ext_deploy import Runner
    runner = Runner("output/export/gfl", backend="paddle-cpu", batch_size=8, policy="buckets")
    results = runner.run(["a.jpg", "b.png"])      # list[ImageResult], caller's order
"""
import zlib  # noqa: F401  (must precede any paddle import; see module docstring)

from .meta import ExportMeta, load_meta
from .planner import BatchPlan, plan_batches
from .runner import ImageResult, Runner, RunReport

__all__ = [
    "ExportMeta", "load_meta", "BatchPlan", "plan_batches", "ImageResult", "Runner", "RunReport",
]
