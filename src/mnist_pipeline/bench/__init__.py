"""``make bench``: our NumPy trainer against PyTorch CPU and the bare-GEMM floor, same run, same machine.

Our trainer runs three times per repetition: on the CPU's native kernels (``ours``), on the pipeline's
default portable kernels (``portable``: OpenBLAS Haswell kernel, numpy SIMD capped at X86_V3), so the
report shows what portability costs on this machine, and on portable kernels unchunked with OpenBLAS's
own threads (``blas_threads``), so it shows what bits independent of the thread count cost.

Run ``python -m mnist_pipeline.bench`` from the bench venv (``make bench`` creates ``.venv-bench`` with the
``bench`` extra: ``torch`` lives only there, never in the runtime dependencies). It writes
``reports/benchmark.json`` and ``reports/benchmark.md``.

Modules: :mod:`.flops` (exact GEMM FLOP count), :mod:`.configs` (the benchmarked nets),
:mod:`.runs` (one measured run of ours or of the floor, in a worker process), :mod:`.torch_run`
(the PyTorch run; the only module that imports torch), :mod:`.worker` (the subprocess entry point),
:mod:`.compare` (interleaved repetitions and their statistics), :mod:`.overhead` (what the
default's augmentation and L2 cost per epoch), :mod:`.pipeline` (installs, stage and ``dvc repro``
wall times, peak RSS), :mod:`.system` (CPU, BLAS, threads), :mod:`.tables` (targets, markdown table).
"""
