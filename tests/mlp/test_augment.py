"""Random-shift augmentation: identity at k=0; every output an exact translation by some
``(dy, dx)`` in ``[-k, k]^2`` with background fill, offsets independent and uniform per image;
seeded determinism; in ``fit``, training batches only, gathered grouped by offset.

Images are random (every pixel distinct), non-square (5x7, so swapped axes would show), and the
translation is checked against a plain-loop reference over all ``(2k+1)^2`` offsets.
"""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.mlp import trainer
from mnist_pipeline.mlp.augment import (
    _resample,
    _smooth,
    affine_displacement,
    apply_deform,
    bilinear_sample,
    deform,
    draw_affine,
    draw_deform,
    draw_shifts,
    elastic_distort,
    gaussian_matrix,
    random_shift,
    shift_grouped,
)
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OptimizerConfig
from mnist_pipeline.mlp.parallel import Workers, split
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import Split, TrainConfig, fit

SHAPE = (5, 7)


def images(n: int, seed: int = 0, dtype=np.float32, low: float = 0.0) -> np.ndarray:
    """``n`` flattened images, values in ``(low + 0.1, 1]`` plus one pixel equal to ``low`` (the background)."""
    x = np.random.default_rng(seed).uniform(low + 0.1, 1.0, (n, SHAPE[0] * SHAPE[1])).astype(dtype)
    x[0, 0] = low
    return x


def translate(img: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """Reference: ``out[r, c] = img[r - dy, c - dx]`` where that exists, else ``fill``."""
    h, w = img.shape
    out = np.full_like(img, fill)
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[r, c] = img[r - dy, c - dx]
    return out


def offsets_of(x: np.ndarray, out: np.ndarray, k: int, fill: float) -> list[tuple[int, int]]:
    """For each image, the unique ``(dy, dx)`` whose translation equals the output (fails if none)."""
    found = []
    for i, (src, dst) in enumerate(zip(x.reshape(-1, *SHAPE), out.reshape(-1, *SHAPE), strict=True)):
        hits = [
            (dy, dx)
            for dy in range(-k, k + 1)
            for dx in range(-k, k + 1)
            if np.array_equal(translate(src, dy, dx, fill), dst)
        ]
        assert len(hits) == 1, f"image {i}: output is not a translation by at most {k} pixels ({hits})"
        found.append(hits[0])
    return found


def record_training_batches(net: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    """Make ``net.train_batch`` record a copy of each training batch and its targets, as the pass saw them
    (``prepare()`` fills them inside the pass); returns the list it appends to."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    train_batch = net.train_batch

    def spy(x, t, loss, scale=None, prepare=None, update=None, columns=None):
        out = train_batch(x, t, loss, scale, prepare, update, columns)
        seen.append((x.copy(), t.copy()))
        return out

    net.train_batch = spy
    return seen


def test_k_zero_is_identity() -> None:
    x = images(6)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    out = random_shift(x, SHAPE, 0, rng)
    assert np.array_equal(out, x)
    assert rng.bit_generator.state == state  # no draws: k=0 leaves the training stream unchanged


@pytest.mark.parametrize("k", [1, 2, 3])
def test_every_output_is_an_exact_translation_with_background_fill(k: int) -> None:
    n = 200 * k  # enough that a cell of the (2k+1)^2 is missed with probability < 3e-4
    x = images(n)
    before = x.copy()
    out = random_shift(x, SHAPE, k, np.random.default_rng(k))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.array_equal(x, before)  # input untouched
    found = offsets_of(x, out, k, fill=0.0)
    # All (2k+1)^2 offsets occur: the offsets really are random ...
    assert len(set(found)) == (2 * k + 1) ** 2
    # ... and every image is drawn independently (not one offset for the whole batch).
    assert len({f for f in found[:10]}) > 1


@pytest.mark.parametrize("k", [1, 3])
def test_shift_grouped_translates_each_group_by_its_offset_in_row_major_order(k: int) -> None:
    side = 2 * k + 1
    counts = np.zeros(side * side, dtype=np.intp)
    counts[::3] = 1  # every third offset, one image each: groups of 1 and empty groups
    counts[-1] = 2  # and a group of 2 at the end
    x = images(int(counts.sum()), seed=k)
    out = shift_grouped(x, SHAPE, k, counts)
    expected = [(code // side - k, code % side - k) for code, c in enumerate(counts) for _ in range(c)]
    assert offsets_of(x, out, k, fill=0.0) == expected


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (3, 2), (1, 4)])
def test_shift_grouped_matches_the_pointwise_definition_for_every_offset_up_to_8(shape) -> None:
    # Every offset of every k up to 8 (the config's limit), on shapes narrower than some shifts: an
    # image shifted out entirely, vertically or horizontally, is all background.
    h, w = shape
    for k in range(1, 9):
        side = 2 * k + 1
        counts = np.ones(side * side, dtype=np.intp)  # one image per offset, in code order
        x = np.random.default_rng(k).uniform(0.1, 1.0, (side * side, h * w)).astype(np.float32)
        x[0, 0] = 0.0  # the background: the batch minimum
        out = shift_grouped(x, shape, k, counts)
        for code in range(side * side):
            dy, dx = code // side - k, code % side - k
            expected = translate(x[code].reshape(shape), dy, dx, fill=0.0)
            assert np.array_equal(out[code].reshape(shape), expected), (shape, k, dy, dx)


def test_shift_grouped_writes_into_out_and_checks_its_arguments() -> None:
    x = images(4)
    counts = np.array([0, 1, 0, 0, 2, 0, 0, 0, 1])
    out = np.full((8, 35), np.nan, np.float32)
    result = shift_grouped(x, SHAPE, 1, counts, out=out[:4])
    assert np.shares_memory(result, out)
    assert np.array_equal(out[:4], shift_grouped(x, SHAPE, 1, counts)) and np.isnan(out[4:]).all()
    with pytest.raises(ValueError, match="C-contiguous out"):
        shift_grouped(x, SHAPE, 1, counts, out=out[::2])
    with pytest.raises(ValueError, match=r"out of shape \(4, 35\) and dtype float32, got \(3, 35\) float32"):
        shift_grouped(x, SHAPE, 1, counts, out=out[:3])
    with pytest.raises(ValueError, match=r"out of shape \(4, 35\) and dtype float32, got \(4, 35\) float64"):
        shift_grouped(x, SHAPE, 1, counts, out=np.empty((4, 35)))
    with pytest.raises(ValueError, match="9 group sizes summing to the 4 images, got 8 summing to 4"):
        shift_grouped(x, SHAPE, 1, counts[1:])
    with pytest.raises(ValueError, match="9 group sizes summing to the 4 images, got 9 summing to 3"):
        shift_grouped(x, SHAPE, 1, np.array([0, 1, 0, 0, 1, 0, 0, 0, 1]))
    fortran = np.asfortranarray(x)  # no out given: a fresh C-ordered one, whatever the input's order
    assert np.array_equal(shift_grouped(fortran, SHAPE, 1, counts), shift_grouped(x, SHAPE, 1, counts))


def test_draw_shifts_offsets_are_uniform_and_independent_of_position() -> None:
    # Chi-square against the uniform law over the 9 offsets, overall and at each position of a batch
    # of 8 (the grouping must not tie an offset to a position); 2000 batches from one generator.
    rng = np.random.default_rng(0)
    codes = np.empty((2000, 8), dtype=np.intp)
    for row in codes:
        order, counts = draw_shifts(8, 1, rng)
        row[order] = np.repeat(np.arange(9), counts)  # offset of each image, back in batch order
    assert counts.sum() == 8 and np.array_equal(np.sort(order), np.arange(8))
    # 99.9% quantile of chi-square with 8 degrees of freedom: 26.1
    for sample in (codes.ravel(), *codes.T):
        observed = np.bincount(sample, minlength=9)
        expected = len(sample) / 9
        assert ((observed - expected) ** 2 / expected).sum() < 26.1
    # neighbours in a batch are independent: a pair's joint law is uniform over 81 cells (df 80: 124.8)
    pairs = np.bincount(codes[:, 0] * 9 + codes[:, 1], minlength=81)
    assert ((pairs - 2000 / 81) ** 2 / (2000 / 81)).sum() < 124.8


def test_background_is_the_minimum_for_standardized_data() -> None:
    # Standardized pixels: background (0 intensity) maps to the most negative value.
    x = images(50, seed=1, dtype=np.float64, low=-0.4242)
    out = random_shift(x, SHAPE, 2, np.random.default_rng(5))
    found = offsets_of(x, out, 2, fill=-0.4242)
    assert any(f != (0, 0) for f in found)
    assert out.dtype == np.float64


def test_same_seed_same_output_different_seed_different_output() -> None:
    x = images(40)
    a = random_shift(x, SHAPE, 2, np.random.default_rng(9))
    b = random_shift(x, SHAPE, 2, np.random.default_rng(9))
    c = random_shift(x, SHAPE, 2, np.random.default_rng(10))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_empty_batch() -> None:
    x = np.zeros((0, SHAPE[0] * SHAPE[1]), np.float32)
    assert random_shift(x, SHAPE, 2, np.random.default_rng(0)).shape == (0, 35)


# --- in fit: applied to training batches only ---------------------------------------------------


def test_fit_shifts_training_images_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(24) % 3
    train = Split(images(24, seed=2), y, np.eye(3, dtype=np.float32)[y])
    val = Split(images(9, seed=3), y[:9], np.eye(3, dtype=np.float32)[y[:9]])
    net = Network([35, 6, 3], "relu", "he_normal", rng)

    shifted: list[np.ndarray] = []

    def spy_draw(b, k, generator):
        assert generator is rng and k == 2  # drawn from the train stage's generator
        return draw_shifts(b, k, generator)

    def spy_shift(x, shape, k, counts, out, background):
        assert (shape, k) == (SHAPE, 2)
        shifted.append(shift_grouped(x, shape, k, counts, out, background).copy())
        return out

    seen: list[tuple[np.ndarray, bool]] = []
    forward, train_batch = net.forward, net.train_batch

    def spy_forward(x, train=False):
        seen.append((x.copy(), train))
        return forward(x, train)

    def spy_train_batch(x, targets, loss, scale=None, prepare=None, update=None, columns=None):
        out = train_batch(x, targets, loss, scale, prepare, update, columns)
        seen.append((x.copy(), True))  # made by prepare() inside the pass
        return out

    monkeypatch.setattr(trainer, "draw_shifts", spy_draw)
    monkeypatch.setattr(trainer, "shift_grouped", spy_shift)
    monkeypatch.setattr(net, "forward", spy_forward)
    monkeypatch.setattr(net, "train_batch", spy_train_batch)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, l2=0.0, seed=0, dtype="float32", augment_shift=2)
    fit(net, train, val, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), rng, SHAPE)

    assert len(shifted) == 6  # once per batch: 3 batches x 2 epochs
    train_batches = [x for x, is_train in seen if is_train]
    eval_batches = [x for x, is_train in seen if not is_train]
    assert len(train_batches) == 6
    for batch, shifted_batch in zip(train_batches, shifted, strict=True):
        assert np.array_equal(batch, shifted_batch)
    # validation sees the raw images, exactly, in order
    assert len(eval_batches) == 2 and all(np.array_equal(x, val.x) for x in eval_batches)


def test_fit_training_images_are_translations_of_the_permuted_set() -> None:
    y = np.arange(12) % 3
    train = Split(images(12, seed=4), y, np.eye(3, dtype=np.float32)[y])
    net = Network([35, 3], "identity", "zeros", np.random.default_rng(0))
    seen = record_training_batches(net)
    rng = np.random.default_rng(1)
    cfg = TrainConfig(epochs=1, batch_size=12, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_shift=1)
    fit(net, train, train, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), rng, SHAPE)
    # replay the generator: the permutation comes first, then the shifts; the batch is the permuted
    # set gathered grouped by offset, each image translated by its own offset
    replay = np.random.default_rng(1)
    perm = replay.permutation(12)
    order, counts = draw_shifts(12, 1, replay)
    ((batch, targets),) = seen
    found = offsets_of(train.x[perm[order]], batch, 1, fill=0.0)
    assert found == [(code // 3 - 1, code % 3 - 1) for code, c in enumerate(counts) for _ in range(c)]
    assert np.array_equal(targets, train.onehot[perm[order]])  # each image keeps its own label (loss targets)


@pytest.mark.parametrize("chunks", [1, 3])
def test_fit_fills_shifted_in_pixels_with_the_training_sets_background_in_every_batch(chunks: int) -> None:
    # Every image's pixels are >= 0.5 but one image's, which are >= -1: a batch without that image
    # still gets -1 (the training set's minimum), not its own minimum, where pixels shifted in.
    n = 12
    x = images(n, seed=9, low=0.5)
    x[0] = images(1, seed=10, low=-1.0)[0]
    y = np.arange(n) % 3
    train = Split(x, y, np.eye(3, dtype=np.float32)[y])
    net = Network([35, 3], "identity", "zeros", np.random.default_rng(0), chunks=chunks)
    seen = record_training_batches(net)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_shift=1)
    fit(net, train, train, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), np.random.default_rng(2), SHAPE)
    replay = np.random.default_rng(2)
    perm = replay.permutation(n)
    without_first = 0
    for i, (got, _) in zip(range(0, n, 4), seen, strict=True):
        order, counts = draw_shifts(4, 1, replay)
        rows = perm[i : i + 4][order]
        assert np.array_equal(got, shift_grouped(x[rows], SHAPE, 1, counts, background=np.float32(-1.0)))
        if 0 not in rows and counts[4] < 4:  # a batch without the dark image, and some image moved
            without_first += 1
            assert got.min() == -1.0 < x[rows].min()
    assert without_first


def test_fit_training_accuracy_counts_each_shifted_image_against_its_own_label() -> None:
    # Images with a zero border of k pixels: a shift by up to k loses no ink, so each image's pixel sum
    # (distinct per image) survives it. A network that reads the label back from that sum is right on
    # every image if, and only if, labels follow their images through the grouped gather.
    k, n = 1, 24
    x = np.zeros((n, *SHAPE), np.float32)
    x[:, k:-k, k:-k] = np.random.default_rng(6).uniform(0.1, 1.0, (n, SHAPE[0] - 2 * k, SHAPE[1] - 2 * k))
    x = x.reshape(n, -1)
    y = np.arange(n) % 3
    label_of = {round(float(v), 3): int(c) for v, c in zip(x.sum(axis=1), y, strict=True)}
    assert len(label_of) == n
    train = Split(x, y, np.eye(3, dtype=np.float32)[y])
    net = Network([35, 3], "identity", "zeros", np.random.default_rng(0))

    def read_labels(xb, targets, loss, scale=None, prepare=None, update=None, columns=None):
        prepare(slice(None))  # the batch is made inside the pass
        logits = 10 * np.eye(3, dtype=np.float32)[[label_of[round(float(v), 3)] for v in xb.sum(axis=1)]]
        return loss.forward(logits, targets), logits

    net.train_batch = read_labels
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_shift=k)
    rows, _ = fit(
        net, train, train, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), np.random.default_rng(3), SHAPE
    )
    assert [row["train_acc"] for row in rows] == [1.0, 1.0]


@pytest.mark.parametrize("chunks", [1, 3])
def test_fit_draws_shifts_then_elastic_fields_batch_by_batch(chunks: int) -> None:
    # The training stream's order, replayed over 2 epochs x 3 batches: per epoch the permutation; per
    # batch the shift offsets, then the elastic field (applied first, to the batch grouped by offset).
    y = np.arange(12) % 3
    train = Split(images(12, seed=7), y, np.eye(3, dtype=np.float32)[y])
    net = Network([35, 3], "identity", "zeros", np.random.default_rng(0), chunks=chunks, workers=Workers(2))
    seen = record_training_batches(net)
    cfg = TrainConfig(
        epochs=2, batch_size=4, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_shift=2, augment_elastic_alpha=1.5
    )
    fit(net, train, train, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), np.random.default_rng(8), SHAPE)
    replay, expected = np.random.default_rng(8), []
    for _ in range(2):
        perm = replay.permutation(12)
        for i in range(0, 12, 4):
            order, counts = draw_shifts(4, 2, replay)
            batch = train.x[perm[i : i + 4][order]]
            draws = draw_deform(4, SHAPE, 1.5, (0, 0, 0, 0), replay, batch.dtype)
            blocks = split(4, net.chunks)  # each row block is deformed on its own, by whichever thread
            distorted = np.concatenate(
                [apply_deform(batch[r], SHAPE, draws[r], 1.5, 4.0, train.x.min()) for r in blocks]
            )
            expected.append(shift_grouped(distorted, SHAPE, 2, counts, background=train.x.min()))
    assert len(seen) == 6
    for (got, _), want in zip(seen, expected, strict=True):
        assert np.array_equal(got, want)


def test_fit_needs_the_image_shape_to_shift() -> None:
    y = np.arange(6) % 3
    data = Split(images(6), y, np.eye(3, dtype=np.float32)[y])
    net = Network([35, 3], "identity", "zeros", np.random.default_rng(0))
    cfg = TrainConfig(epochs=1, batch_size=3, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_shift=1)
    with pytest.raises(ValueError, match="augment_shift needs image_shape"):
        fit(net, data, data, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), np.random.default_rng(0))


# --- elastic distortions --------------------------------------------------------------------------


def gaussian_smooth_reference(v: np.ndarray, sigma: float) -> np.ndarray:
    """1-D Gaussian smoothing with zeros outside, by ``np.convolve`` (kernel truncated at 4 sigma)."""
    radius = int(4 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return np.convolve(v, kernel / kernel.sum(), mode="full")[radius : radius + len(v)]


@pytest.mark.parametrize(("n", "sigma"), [(28, 4.0), (7, 1.0), (5, 3.0), (9, 0.5)])
def test_gaussian_matrix_is_convolution_with_zero_padding(n: int, sigma: float) -> None:
    v = np.random.default_rng(n).standard_normal(n)
    np.testing.assert_allclose(gaussian_matrix(n, sigma) @ v, gaussian_smooth_reference(v, sigma), atol=1e-14)


def bilinear_reference(img: np.ndarray, sy: float, sx: float, fill: float) -> float:
    """``img`` read at the real point ``(sy, sx)``; pixels outside the image are ``fill``."""
    h, w = img.shape

    def at(r: int, c: int) -> float:
        return img[r, c] if 0 <= r < h and 0 <= c < w else fill

    r0, c0 = int(np.floor(sy)), int(np.floor(sx))
    fy, fx = sy - r0, sx - c0
    top = (1 - fx) * at(r0, c0) + fx * at(r0, c0 + 1)
    bottom = (1 - fx) * at(r0 + 1, c0) + fx * at(r0 + 1, c0 + 1)
    return (1 - fy) * top + fy * bottom


def test_bilinear_sample_with_integer_displacements_translates() -> None:
    img = images(1, dtype=np.float64).reshape(1, *SHAPE)
    for dy, dx in [(1, 0), (0, -2), (-1, 3), (2, 2)]:
        out = bilinear_sample(img, np.full((1, *SHAPE), float(dy)), np.full((1, *SHAPE), float(dx)), -1.0)
        assert np.array_equal(out[0], translate(img[0], -dy, -dx, -1.0))  # reads (r + dy) = moves by -dy


def test_bilinear_sample_matches_the_pointwise_reference() -> None:
    rng = np.random.default_rng(7)
    img = images(2, dtype=np.float64).reshape(2, *SHAPE)
    dy, dx = rng.uniform(-3, 3, (2, 2, *SHAPE))  # (2, N, H, W): far enough to leave the image
    out = bilinear_sample(img, dy, dx, 0.0)
    for n in range(2):
        for r in range(SHAPE[0]):
            for c in range(SHAPE[1]):
                expected = bilinear_reference(img[n], r + dy[n, r, c], c + dx[n, r, c], 0.0)
                assert out[n, r, c] == pytest.approx(expected, abs=1e-12)


def test_elastic_alpha_zero_is_identity_without_draws() -> None:
    x = images(4)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert elastic_distort(x, SHAPE, 0.0, 4.0, rng) is x
    assert rng.bit_generator.state == state


def test_elastic_distort_equals_its_definition_computed_pointwise() -> None:
    # Replay the generator: uniform field in [-1, 1], smoothed by np.convolve along each axis,
    # times alpha, then each pixel read bilinearly at its displaced point (background outside).
    x = images(3, dtype=np.float64, low=-0.25)
    alpha, sigma = 2.5, 1.5
    out = elastic_distort(x, SHAPE, alpha, sigma, np.random.default_rng(11))
    field = np.random.default_rng(11).random((3, 2, *SHAPE)) * 2 - 1
    field = np.apply_along_axis(gaussian_smooth_reference, 3, field, sigma)
    field = alpha * np.apply_along_axis(gaussian_smooth_reference, 2, field, sigma)
    imgs = x.reshape(3, *SHAPE)
    for n in range(3):
        for r in range(SHAPE[0]):
            for c in range(SHAPE[1]):
                expected = bilinear_reference(imgs[n], r + field[n, 0, r, c], c + field[n, 1, r, c], -0.25)
                assert out[n, r * SHAPE[1] + c] == pytest.approx(expected, abs=1e-12)
    assert not np.allclose(out, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elastic_distort_keeps_shape_dtype_range_and_is_seeded(dtype) -> None:
    x = images(20, dtype=dtype)
    before = x.copy()
    a = elastic_distort(x, SHAPE, 3.0, 1.0, np.random.default_rng(2))
    b = elastic_distort(x, SHAPE, 3.0, 1.0, np.random.default_rng(2))
    c = elastic_distort(x, SHAPE, 3.0, 1.0, np.random.default_rng(3))
    assert a.shape == x.shape and a.dtype == dtype and np.array_equal(x, before)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    slack = 4 * np.finfo(dtype).eps  # convex combinations of pixels and background, up to rounding
    assert a.min() >= x.min() - slack and a.max() <= x.max() + slack
    small = elastic_distort(x, SHAPE, 1e-4, 1.0, np.random.default_rng(2))
    assert np.abs(small - x).max() < 1e-3  # displacements are at most alpha pixels


def test_fit_distorts_training_images_only_and_needs_the_image_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(12) % 3
    train = Split(images(12, seed=2), y, np.eye(3, dtype=np.float32)[y])
    val = Split(images(6, seed=3), y[:6], np.eye(3, dtype=np.float32)[y[:6]])
    net = Network([35, 3], "identity", "zeros", rng)
    calls: list[tuple[float, float]] = []

    def spy(n, shape, alpha, affine, generator, dtype):
        assert generator is rng and shape == SHAPE and affine == (0.0, 0.0, 0.0, 0.0)
        calls.append((n, alpha))
        return draw_deform(n, shape, alpha, affine, generator, dtype)

    seen: list[tuple[np.ndarray, bool]] = []
    forward, train_batch = net.forward, net.train_batch
    monkeypatch.setattr(trainer, "draw_deform", spy)
    monkeypatch.setattr(net, "forward", lambda x, train=False: seen.append((x.copy(), train)) or forward(x, train))
    monkeypatch.setattr(
        net,
        "train_batch",
        lambda x, t, loss, scale=None, prepare=None, update=None, columns=None: (
            train_batch(x, t, loss, scale, prepare, update, columns),
            seen.append((x.copy(), True)),
        )[0],
    )
    cfg = TrainConfig(1, 6, 0.1, 0.0, 0, "float32", augment_elastic_alpha=2.0, augment_elastic_sigma=1.5)
    fit(net, train, val, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), rng, SHAPE)
    assert calls == [(6, 2.0), (6, 2.0)]  # once per training batch
    assert sum(is_train for _, is_train in seen) == 2
    assert not any(np.array_equal(x, train.x[: len(x)]) for x, is_train in seen if is_train)
    assert [np.array_equal(x, val.x) for x, is_train in seen if not is_train] == [True]
    with pytest.raises(ValueError, match="augment_elastic_alpha needs image_shape"):
        fit(net, train, val, cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), rng)


def test_bilinear_sample_refuses_integer_images_and_elastic_rounds_them_back() -> None:
    ints = (images(3) * 255).astype(np.uint8).reshape(3, *SHAPE)
    with pytest.raises(TypeError, match="needs floating-point images, got uint8"):
        bilinear_sample(ints, np.zeros((3, *SHAPE)), np.zeros((3, *SHAPE)), 0)
    x = ints.reshape(3, -1)
    out = elastic_distort(x, SHAPE, 2.0, 1.0, np.random.default_rng(4))
    as_float = elastic_distort(x.astype(np.float64), SHAPE, 2.0, 1.0, np.random.default_rng(4))
    assert out.dtype == np.uint8 and np.array_equal(out, np.rint(as_float))


# --- affine maps: one displacement field with the elastic one, one resample ----------------------


def _images(n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, shape[0] * shape[1]))  # every pixel distinct


def test_the_identity_map_moves_nothing() -> None:
    field = affine_displacement(np.array([[0.0, 1.0, 0.0, 0.0, 0.0]] * 3), SHAPE)
    assert field.shape == (3, 2, *SHAPE) and not field.any()


def test_a_quarter_turn_is_a_rotation_of_the_pixel_grid() -> None:
    x = _images(2, (7, 7))
    field = affine_displacement(np.array([[np.pi / 2, 1.0, 0.0, 0.0, 0.0]] * 2), (7, 7))
    turned = bilinear_sample(x.reshape(2, 7, 7), field[:, 0], field[:, 1], background=-1.0)
    np.testing.assert_allclose(turned, np.rot90(x.reshape(2, 7, 7), k=-1, axes=(1, 2)), atol=1e-12)


def test_a_whole_pixel_translation_is_an_exact_shift() -> None:
    x = _images(1, SHAPE).reshape(1, *SHAPE)
    field = affine_displacement(np.array([[0.0, 1.0, 0.0, 2.0, -1.0]]), SHAPE)  # read 2 rows down, 1 column left
    moved = bilinear_sample(x, field[:, 0], field[:, 1], background=-1.0)[0]
    expected = np.full(SHAPE, -1.0)
    expected[:-2, 1:] = x[0, 2:, :-1]
    np.testing.assert_array_equal(moved, expected)


def test_scale_above_one_enlarges_about_the_centre() -> None:
    field = affine_displacement(np.array([[0.0, 2.0, 0.0, 0.0, 0.0]]), (5, 5))
    centre, corner = field[0, :, 2, 2], field[0, :, 0, 0]
    assert not centre.any()  # the centre stays
    np.testing.assert_allclose(corner, [1.0, 1.0])  # the corner reads halfway to the centre


def test_draws_are_uniform_in_their_ranges_and_one_draw_per_batch() -> None:
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    params = draw_affine(4000, 15.0, 0.1, 0.3, 2.0, rng)
    twin.random((4000, 5))
    assert rng.random() == twin.random()  # exactly 5 numbers per image were drawn
    for col, (low, high) in enumerate([(-np.deg2rad(15), np.deg2rad(15)), (0.9, 1.1), (-0.3, 0.3), (-2, 2), (-2, 2)]):
        assert low <= params[:, col].min() < low + 0.01 * (high - low)
        assert high - 0.01 * (high - low) < params[:, col].max() <= high


def test_without_affine_ranges_deform_is_the_elastic_distortion_itself() -> None:
    x = _images(6, SHAPE).astype(np.float32)
    rng, twin = np.random.default_rng(9), np.random.default_rng(9)
    assert (
        deform(x, SHAPE, 2.0, 1.5, (0, 0, 0, 0), rng).tobytes() == elastic_distort(x, SHAPE, 2.0, 1.5, twin).tobytes()
    )
    assert rng.random() == twin.random()  # the same draws
    assert deform(x, SHAPE, 0.0, 4.0, (0, 0, 0, 0), rng) is x  # nothing on: the input, nothing drawn


def test_elastic_and_affine_add_up_to_one_field_resampled_once() -> None:
    x = _images(6, SHAPE).astype(np.float32)
    affine = (20.0, 0.15, 0.2, 1.5)
    out = deform(x, SHAPE, 2.0, 1.5, affine, np.random.default_rng(4))

    rng = np.random.default_rng(4)  # by hand, in the documented order: the elastic field, then the affine map
    noise = rng.random((6, 2, *SHAPE), dtype=np.float32) * 2 - 1  # uniform in [-1, 1) per pixel and axis
    field = _smooth(noise, 1.5) * np.float32(2.0)
    field += affine_displacement(draw_affine(6, *affine, rng), SHAPE, np.float32)
    assert out.tobytes() == _resample(x, SHAPE, field, np.dtype(np.float32)).tobytes()
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.tobytes() == deform(x, SHAPE, 2.0, 1.5, affine, np.random.default_rng(4)).tobytes()  # seeded
    assert out.tobytes() != deform(x, SHAPE, 2.0, 1.5, affine, np.random.default_rng(5)).tobytes()
    assert x.min() <= out.min() and out.max() <= x.max()  # convex combinations of pixels and background


def test_bilinear_sample_indexes_a_batch_larger_than_float32_counts_exactly() -> None:
    # 2 million 1x1 images: the padded batch has 18 million pixels, past float32's 2**24 whole numbers
    rng = np.random.default_rng(5)
    n = 2_000_000
    images = rng.random((n, 1, 1), dtype=np.float32)
    dy, dx = (rng.random((2, n, 1, 1), dtype=np.float32) - 0.5) * 0.5
    whole = bilinear_sample(images, dy, dx, 0.0)
    parts = [
        bilinear_sample(images[i : i + 100_000], dy[i : i + 100_000], dx[i : i + 100_000], 0.0)
        for i in range(0, n, 100_000)
    ]
    assert whole.tobytes() == np.concatenate(parts).tobytes()
