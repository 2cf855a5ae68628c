"""Training-time data augmentation, vectorized over the batch: random translations, elastic distortions and
random affine maps (rotation, scale, shear, sub-pixel translation), the last two as one displacement field
per image applied by one bilinear resample."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


def draw_shifts(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw an independent offset ``(dy, dx)``, uniform in ``[-k, k]^2``, for each of ``n`` images.

    Returns ``(order, counts)``: ``order`` (N,) lists the images grouped by offset (stable within a
    group) and ``counts`` ((2k+1)^2,) the group sizes, offsets in row-major order from ``(-k, -k)``.
    :func:`shift_grouped` applies them to ``x[order]``; one draw of ``n`` integers from ``rng``.
    """
    side = 2 * k + 1
    codes = rng.integers(0, side * side, size=n)  # (N,): offset (code // side - k, code % side - k)
    return np.argsort(codes, kind="stable"), np.bincount(codes, minlength=side * side)


def shift_grouped(
    x: np.ndarray,
    shape: tuple[int, int],
    k: int,
    counts: np.ndarray,
    out: np.ndarray | None = None,
    background: float | None = None,
) -> np.ndarray:
    """Translate flattened images grouped by offset, as :func:`draw_shifts` orders them.

    The first ``counts[0]`` rows of ``x`` (N, H*W) move by ``(-k, -k)``, the next ``counts[1]`` by
    ``(-k, -k + 1)``, and so on: ``out[r, c] = x[r - dy, c - dx]``, and pixels shifted in from outside
    are ``background``, by default the minimum of ``x`` (0 for ``scale``, negative for ``standardize``).
    Written into ``out`` (a new array if None; not ``x``), which is returned.
    """
    n, (h, w) = len(x), shape
    side = 2 * k + 1
    if len(counts) != side * side or counts.sum() != n:
        raise ValueError(
            f"shift_grouped needs {side * side} group sizes summing to the {n} images, "
            f"got {len(counts)} summing to {counts.sum()}"
        )
    out = np.empty(x.shape, x.dtype) if out is None else out
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"shift_grouped needs out of shape {x.shape} and dtype {x.dtype}, got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("shift_grouped needs a C-contiguous out (its rows are reshaped into images)")
    grid = out.reshape(n, h, w)  # (N, H, W) view of out
    if background is None:
        background = x.min() if x.size else 0
    start = 0
    # A group is a block of whole rows. In the flattened image a shift by (dy, dx) is a shift by
    # s = dy * W + dx: one contiguous copy per group, then background over the s pixels shifted in
    # at one end and over the |dx| columns that wrapped around from the neighbouring row.
    for code, count in enumerate(counts.tolist()):
        if not count:
            continue
        rows, start = slice(start, start + count), start + count
        dy, dx = code // side - k, code % side - k
        s = dy * w + dx
        if abs(dy) >= h or abs(dx) >= w:  # shifted out of the image entirely (k >= H or W: small images)
            out[rows] = background
            continue
        if s >= 0:
            out[rows, s:] = x[rows, : h * w - s]
            out[rows, :s] = background
        else:
            out[rows, :s] = x[rows, -s:]
            out[rows, s:] = background
        if dx:
            grid[rows, :, slice(0, dx) if dx > 0 else slice(w + dx, w)] = background
    return out


def random_shift(x: np.ndarray, shape: tuple[int, int], k: int, rng: np.random.Generator) -> np.ndarray:
    """Translate each flattened image by independent integer offsets in ``[-k, k]`` (see :func:`shift_grouped`).

    ``x`` is ``(N, H*W)``; returns a new ``(N, H*W)`` array of the same dtype, images in their order.
    ``k == 0`` returns ``x`` and draws nothing. (The trainer gathers each batch already grouped by
    offset and calls :func:`shift_grouped` directly, saving this function's two reorderings.)
    """
    if k == 0:
        return x
    order, counts = draw_shifts(len(x), k, rng)
    out = np.empty_like(x)
    out[order] = shift_grouped(x[order], shape, k, counts)
    return out


def gaussian_matrix(n: int, sigma: float, dtype: DTypeLike = np.float64) -> np.ndarray:
    """``(n, n)`` matrix ``K`` with ``K @ v`` = ``v`` convolved with a Gaussian of std ``sigma`` (pixels).

    Zero outside the signal (``scipy.ndimage.gaussian_filter(..., mode="constant")``), kernel
    truncated at 4 sigma and normalized over its full support, so edge rows sum to less than 1.
    """
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    diff = np.arange(n)[:, None] - np.arange(n)[None, :]  # (n, n): i - j
    return np.where(np.abs(diff) <= radius, kernel[np.clip(diff + radius, 0, 2 * radius)], 0).astype(dtype)


def bilinear_sample(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, background: float) -> np.ndarray:
    """``out[n, r, c]`` = ``images[n]`` read at ``(r + dy[n, r, c], c + dx[n, r, c])``, bilinearly.

    ``images`` is ``(N, H, W)``, floating point; points outside the image read ``background``. Each
    output is a convex combination of four pixels (or background), so it stays within their range
    (up to rounding).
    """
    if images.dtype.kind != "f":
        raise TypeError(f"bilinear_sample needs floating-point images, got {images.dtype}")
    n, h, w = images.shape
    padded = np.full((n, h + 2, w + 2), background, dtype=images.dtype)  # (N, H+2, W+2): 1-pixel border
    padded[:, 1:-1, 1:-1] = images
    sy = np.clip(dy + np.arange(h, dtype=dy.dtype)[:, None], -1, h)  # (N, H, W) source row, border included
    sx = np.clip(dx + np.arange(w, dtype=dx.dtype)[None, :], -1, w)
    y0, x0 = np.minimum(np.floor(sy), h - 1), np.minimum(np.floor(sx), w - 1)  # upper-left neighbour, -1..H-1
    wy = (sy - y0).astype(images.dtype, copy=False)  # (N, H, W) in [0, 1]
    wx = (sx - x0).astype(images.dtype, copy=False)
    corner = (y0.astype(np.intp) + 1) * (w + 2) + (x0.astype(np.intp) + 1)  # index in the padded image
    corner += (np.arange(n, dtype=np.intp) * ((h + 2) * (w + 2)))[:, None, None]  # ... in the padded batch
    flat = padded.reshape(-1)
    upper, right = flat.take(corner), flat.take(corner + 1)
    lower, lower_right = flat.take(corner + (w + 2)), flat.take(corner + (w + 3))
    # In place from here on: (1 - wx) left + wx right per row, then (1 - wy) upper + wy lower; the
    # convex form is exact at whole-pixel displacements (weights 0 and 1).
    one_minus = 1 - wx
    upper *= one_minus
    right *= wx
    upper += right
    lower *= one_minus
    lower_right *= wx
    lower += lower_right
    np.subtract(1, wy, out=one_minus)
    upper *= one_minus
    lower *= wy
    upper += lower
    return upper


AFFINE_PARAMS = 5  # per image: rotation, scale, shear, translation down, translation right


def affine_displacement(params: np.ndarray, shape: tuple[int, int], dtype: DTypeLike = np.float64) -> np.ndarray:
    """``(N, 2, H, W)`` displacement (rows, then columns) of the affine maps ``params`` (N, 5).

    Each row of ``params`` is (rotation in radians, scale, shear, translation down, translation right
    in pixels). Output pixel ``p`` reads the source at ``M (p - c) + c + t``, ``c`` the image centre
    and ``M = R(rotation) S(shear) / scale`` (``S`` shears columns along rows): a scale above 1
    enlarges the digit. The displacement is that source point minus ``p``.
    """
    dtype = np.dtype(dtype)
    h, w = shape
    p = params.astype(dtype, copy=False)
    cos, sin, inv = np.cos(p[:, 0]), np.sin(p[:, 0]), 1 / p[:, 1]
    m = np.empty((len(p), 2, 2), dtype)  # (N, 2, 2) in (row, column) coordinates
    m[:, 0, 0], m[:, 0, 1] = cos * inv, (cos * p[:, 2] - sin) * inv
    m[:, 1, 0], m[:, 1, 1] = sin * inv, (sin * p[:, 2] + cos) * inv
    qy = (np.arange(h, dtype=dtype) - (h - 1) / 2)[:, None]  # (H, 1) rows from the centre (a Python float keeps dtype)
    qx = (np.arange(w, dtype=dtype) - (w - 1) / 2)[None, :]  # (1, W) columns from the centre
    field = np.empty((len(p), 2, h, w), dtype)
    field[:, 0] = (m[:, 0, 0, None, None] - 1) * qy + m[:, 0, 1, None, None] * qx + p[:, 3, None, None]
    field[:, 1] = m[:, 1, 0, None, None] * qy + (m[:, 1, 1, None, None] - 1) * qx + p[:, 4, None, None]
    return field


def draw_affine(
    n: int, rotate: float, scale: float, shear: float, translate: float, rng: np.random.Generator
) -> np.ndarray:
    """``(N, 5)`` affine parameters for :func:`affine_displacement`, each uniform in its range.

    Rotation in ``[-rotate, rotate]`` degrees, scale in ``[1 - scale, 1 + scale]``, shear in
    ``[-shear, shear]``, each translation in ``[-translate, translate]`` pixels: one draw of ``5 n``
    numbers from ``rng``, whatever the ranges (a range of 0 gives its identity).
    """
    u = rng.random((n, AFFINE_PARAMS)) * 2 - 1  # (N, 5) in [-1, 1)
    return u * np.array([np.deg2rad(rotate), scale, shear, translate, translate]) + np.array([0, 1, 0, 0, 0])


def deform(
    x: np.ndarray,
    shape: tuple[int, int],
    alpha: float,
    sigma: float,
    affine: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Elastic distortion (:func:`elastic_distort`) and a random affine map in one bilinear resample.

    ``affine`` is (rotate degrees, scale, shear, translate pixels), as :func:`draw_affine` takes
    them. The displacement fields add: first the elastic field is drawn (as :func:`elastic_distort`
    draws it), then the affine parameters. With every affine range 0 this is :func:`elastic_distort`
    exactly, the same draws and the same bytes.
    """
    if not any(affine):
        return elastic_distort(x, shape, alpha, sigma, rng)
    n = len(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    field = _elastic_field(n, shape, alpha, sigma, rng, dtype) if alpha else None
    moved = affine_displacement(draw_affine(n, *affine, rng), shape, dtype)  # (N, 2, H, W)
    if field is not None:
        moved += field
    return _resample(x, shape, moved, dtype)


def _elastic_field(
    n: int, shape: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator, dtype: np.dtype
) -> np.ndarray:
    """The ``(N, 2, H, W)`` elastic displacement of :func:`elastic_distort` (its only draw from ``rng``)."""
    h, w = shape
    field = rng.random((n, 2, h, w), dtype=dtype)  # (N, 2, H, W): dy and dx maps
    field *= 2
    field -= 1
    kh, kw = gaussian_matrix(h, sigma, dtype), gaussian_matrix(w, sigma, dtype)
    field = kh @ (field.reshape(-1, w) @ kw.T).reshape(n, 2, h, w)  # smooth along W, then along H
    field *= dtype.type(alpha)
    return field


def _resample(x: np.ndarray, shape: tuple[int, int], field: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` (N, H*W) read at the displaced points ``field`` (N, 2, H, W), background its minimum."""
    n, (h, w) = len(x), shape
    background = x.min() if x.size else 0
    out = bilinear_sample(x.reshape(n, h, w).astype(dtype, copy=False), field[:, 0], field[:, 1], background)
    if x.dtype.kind != "f":
        out = np.rint(out)
    return out.reshape(n, h * w).astype(x.dtype, copy=False)


def elastic_distort(
    x: np.ndarray, shape: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Elastic distortion (Simard, Steinkraus and Platt 2003) of each flattened image.

    Per image, a displacement field uniform in ``[-1, 1]`` per pixel and axis is smoothed by a
    Gaussian of std ``sigma`` pixels and multiplied by ``alpha``, and the image is resampled
    bilinearly at the displaced points (background, the minimum of ``x``, outside). Displacements
    are at most ``alpha`` pixels and much smaller in practice: smoothing averages the noise away
    (at ``sigma`` 4 their standard deviation is about ``alpha / 27``). ``x`` is ``(N, H*W)``;
    returns a new array of the same shape and dtype (integer images are rounded back);
    ``alpha == 0`` returns ``x``.
    """
    if alpha == 0:
        return x
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    return _resample(x, shape, _elastic_field(len(x), shape, alpha, sigma, rng, dtype), dtype)
