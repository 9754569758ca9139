"""Inference backends behind one interface (:class:`deploy.backends.base.Backend`).

Which backend serves which format, what each needs and which options it takes is the table in
``deploy/formats.py``; a new backend is one file here plus one row there.
"""
