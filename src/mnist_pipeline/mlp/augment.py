"""Training-time data augmentation, vectorized over the batch: random translations, elastic distortions and
random affine maps (rotation, scale, shear, sub-pixel translation), the last two as one displacement field
per image applied by one bilinear resample."""

from __future__ import annotations

from dataclasses import dataclass

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
    row = w + 2  # the padded image's row length
    padded = np.full((n, h + 2, row), background, dtype=images.dtype)  # (N, H+2, W+2): 1-pixel border
    padded[:, 1:-1, 1:-1] = images
    sy = np.add(dy, np.arange(h, dtype=dy.dtype)[:, None])  # (N, H, W) source row
    np.clip(sy, -1, h, out=sy)  # border included
    sx = np.add(dx, np.arange(w, dtype=dx.dtype)[None, :])
    np.clip(sx, -1, w, out=sx)
    y0, x0 = np.floor(sy), np.floor(sx)  # upper-left neighbour, -1..H-1 and -1..W-1
    np.minimum(y0, h - 1, out=y0)
    np.minimum(x0, w - 1, out=x0)
    wy = np.subtract(sy, y0, out=sy).astype(images.dtype, copy=False)  # (N, H, W) in [0, 1]
    wx = np.subtract(sx, x0, out=sx).astype(images.dtype, copy=False)
    # Index of the upper-left neighbour in the padded batch, computed in floating point (whole numbers,
    # exact far beyond any batch's size), then converted once; the other three neighbours are read
    # through views of the flat batch that start 1, a row, and a row plus 1 further on.
    if n * (h + 2) * row >= 2 ** (np.finfo(y0.dtype).nmant + 1):  # past the dtype's exact whole numbers
        y0, x0 = y0.astype(np.float64), x0.astype(np.float64)
    y0 += 1
    y0 *= row
    y0 += x0
    y0 += (np.arange(n, dtype=y0.dtype) * ((h + 2) * row) + 1)[:, None, None]
    corner = y0.astype(np.intp)
    flat = padded.reshape(-1)
    upper, right = flat.take(corner), flat[1:].take(corner)
    lower, lower_right = flat[row:].take(corner), flat[row + 1 :].take(corner)
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


@dataclass(frozen=True)
class DeformDraws:
    """What :func:`draw_deform` took from the random stream for a batch: all of it, before any image is touched."""

    noise: np.ndarray | None  # (N, 2, H, W) uniform in [-1, 1): the elastic field before smoothing
    affine: np.ndarray | None  # (N, 5) parameters for affine_displacement

    def __getitem__(self, rows: slice) -> DeformDraws:
        """The draws of images ``rows`` (views)."""
        return DeformDraws(
            None if self.noise is None else self.noise[rows], None if self.affine is None else self.affine[rows]
        )


def draw_deform(
    n: int,
    shape: tuple[int, int],
    alpha: float,
    affine: tuple[float, float, float, float],
    rng: np.random.Generator,
    dtype: DTypeLike = np.float64,
) -> DeformDraws:
    """Draw ``n`` images' deformations: the elastic noise (if ``alpha``), then the affine parameters (if any range)."""
    noise = None
    if alpha:
        size = (n, 2, *shape)  # (N, 2, H, W): dy and dx maps
        noise = rng.random(size, dtype=np.float32) if np.dtype(dtype) == np.float32 else rng.random(size)
        noise *= 2
        noise -= 1
    return DeformDraws(noise, draw_affine(n, *affine, rng) if any(affine) else None)


def apply_deform(
    x: np.ndarray, shape: tuple[int, int], draws: DeformDraws, alpha: float, sigma: float, background: float
) -> np.ndarray:
    """``x`` (N, H*W) deformed by ``draws`` (of the same N images): one field per image, one resample.

    The elastic field is the noise smoothed by a Gaussian of std ``sigma`` and multiplied by ``alpha``;
    the affine displacement adds to it. Points outside the image read ``background``. No randomness
    here: an image's bytes depend on the row block it is deformed in (the smoothing is a matrix
    product over the block), never on which thread deforms the block.
    """
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if draws.noise is None and draws.affine is None:
        return x
    field = None
    if draws.noise is not None:
        field = _smooth(draws.noise.astype(dtype, copy=False), sigma)
        field *= dtype.type(alpha)
    if draws.affine is not None:
        moved = affine_displacement(draws.affine, shape, dtype)  # (N, 2, H, W)
        if field is not None:
            moved += field
        field = moved
    assert field is not None
    return _resample(x, shape, field, dtype, background)


def deform(
    x: np.ndarray,
    shape: tuple[int, int],
    alpha: float,
    sigma: float,
    affine: tuple[float, float, float, float],
    rng: np.random.Generator,
    background: float | None = None,
) -> np.ndarray:
    """Elastic distortion (:func:`elastic_distort`) and a random affine map in one bilinear resample.

    ``affine`` is (rotate degrees, scale, shear, translate pixels), as :func:`draw_affine` takes
    them. :func:`draw_deform` draws (the elastic noise first, then the affine parameters) and
    :func:`apply_deform` adds the two fields and resamples once. ``background`` defaults to the
    minimum of ``x``. Nothing on: returns ``x`` and draws nothing.
    """
    if not alpha and not any(affine):
        return x
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    draws = draw_deform(len(x), shape, alpha, affine, rng, dtype)
    fill = (x.min() if x.size else 0) if background is None else background
    return apply_deform(x, shape, draws, alpha, sigma, fill)


def _smooth(noise: np.ndarray, sigma: float) -> np.ndarray:
    """``noise`` (N, 2, H, W) convolved with a Gaussian of std ``sigma`` along W, then H (zeros outside)."""
    n, _, h, w = noise.shape
    kh, kw = gaussian_matrix(h, sigma, noise.dtype), gaussian_matrix(w, sigma, noise.dtype)
    return kh @ (noise.reshape(-1, w) @ kw.T).reshape(n, 2, h, w)


def _resample(
    x: np.ndarray, shape: tuple[int, int], field: np.ndarray, dtype: np.dtype, background: float | None = None
) -> np.ndarray:
    """``x`` (N, H*W) read at the displaced points ``field`` (N, 2, H, W); outside, ``background`` (default: the
    minimum of ``x``)."""
    n, (h, w) = len(x), shape
    if background is None:
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
    return deform(x, shape, alpha, sigma, (0, 0, 0, 0), rng)
