"""Helpers shared by the test suite (plain functions and classes; fixtures live in ``conftest.py``).

Imported by absolute name (``from helpers.gradcheck import numeric_grad``): pytest puts ``tests/``
on ``sys.path`` for the rootdir ``conftest.py``, as it does for the ``mlp``, ``stages`` and
``reliability`` test packages.

``bombs``
    Small hostile files: gzip and ``.npz`` bombs, lying ``.npy`` headers, PNG headers of huge images.
``capped``
    Run a command under a memory cap (``RLIMIT_AS``) and a time bound; its peak RSS from ``wait4``.
``dvc_sandbox``
    A throw-away copy of the repo as its own git + DVC repository (``copy_repo``, ``make_sandbox``).
``files``
    Synthetic download blobs with their ``FileSpec``, corruption, directory listings.
``gradcheck``
    Central finite differences and the relative error used by every gradient check.
``http_faults``
    A scriptable, misbehaving HTTP server on 127.0.0.1.
``stall``
    Stall a stage halfway through a large write (a ``sitecustomize`` shim) so a test can kill it there.
``stall_shim``
    The shim itself, run in the child process; not imported by tests.
``tiny_mnist``
    A small synthetic MNIST in the canonical gzip IDX layout.
"""
