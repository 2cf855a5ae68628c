"""Exact GEMM FLOP count of MLP training (forward + backward), and the GEMM shapes it runs.

For a dense layer with ``i`` inputs, ``o`` outputs and a batch of ``b`` rows, one training step does
three matrix products, each ``2 b i o`` FLOPs (a multiply and an add per multiply-accumulate):

- forward ``Z = X @ W``: ``(b, i) x (i, o)``
- weight gradient ``dW = X^T @ G``: ``(i, b) x (b, o)``
- input gradient ``dX = G @ W^T``: ``(b, o) x (o, i)``, skipped for the first layer (nobody needs the
  gradient w.r.t. the pixels; our ``Network.backward`` skips it and so does autograd, the input has no
  ``requires_grad``).

Summed over an epoch of ``N`` examples (the count is linear in ``b``, so a partial last batch changes
nothing): ``F = 2 N (3 sum_l i_l o_l - i_0 o_0)``. Bias adds, activations, softmax, loss and the
optimizer update are not counted, so GFLOP/s means GEMM FLOPs per second of the whole epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

FORMULA = "F = 2 * N * (3 * sum_l in_l * out_l - in_0 * out_0)  [GEMM only: forward, dW, dX except layer 0]"


def layer_dims(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """``(in, out)`` of every dense layer of ``sizes = [in, h1, ..., out]``."""
    if len(sizes) < 2:
        raise ValueError(f"sizes {list(sizes)} needs at least an input and an output size")
    return list(zip(sizes[:-1], sizes[1:], strict=False))


def step_gemms(sizes: Sequence[int], batch: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of every matrix product of one training step, in execution order.

    Forward layer by layer, then backward from the last layer: ``dW`` and (except for layer 0) ``dX``.
    """
    dims = layer_dims(sizes)
    shapes = [(batch, i, o) for i, o in dims]  # Z = X @ W
    for layer in reversed(range(len(dims))):
        i, o = dims[layer]
        shapes.append((i, batch, o))  # dW = X^T @ G
        if layer > 0:
            shapes.append((batch, o, i))  # dX = G @ W^T
    return shapes


def step_flops(sizes: Sequence[int], batch: int) -> int:
    """FLOPs of the GEMMs of one training step on a batch of ``batch`` rows."""
    return sum(2 * m * k * n for m, k, n in step_gemms(sizes, batch))


def batch_sizes(n: int, batch: int) -> list[int]:
    """Row counts of the batches of one epoch over ``n`` examples (the last one may be partial)."""
    return [min(batch, n - start) for start in range(0, n, batch)]


def epoch_flops(sizes: Sequence[int], n: int, batch: int) -> int:
    """GEMM FLOPs of one epoch, batch by batch (equals :func:`closed_form_flops`)."""
    return sum(step_flops(sizes, b) for b in batch_sizes(n, batch))


def closed_form_flops(sizes: Sequence[int], n: int) -> int:
    """``2 N (3 sum_l in_l out_l - in_0 out_0)``: the documented formula."""
    dims = layer_dims(sizes)
    return 2 * n * (3 * sum(i * o for i, o in dims) - dims[0][0] * dims[0][1])
