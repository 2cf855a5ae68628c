"""The network's fixed decomposition: the bits depend on ``chunks``, never on the number of threads.

Training with :func:`~mnist_pipeline.mlp.trainer.fit` (ReLU, dropout, L2; a prescaled and a plain
optimizer) gives byte-identical weights on 1, 2, 3 and 4 threads for each ``chunks``; inference of a
chunked network is the unsplit network applied block by block; ``chunks`` changes the gradients by
rounding only; ``gradients(update)`` reports every row of every parameter exactly once, when final.

The first weight matrix (40 x 900) is large enough to be cut into row blocks
(:data:`~mnist_pipeline.mlp.network.MIN_SPLIT_ELEMENTS`), the second is not, so both kinds of
gradient piece run. BLAS computes each call on one thread, as the stages set it
(:func:`mnist_pipeline.compute.apply`). One ``Workers`` per thread count serves the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest
import threadpoolctl

from mnist_pipeline.mlp import network
from mnist_pipeline.mlp.losses import make_loss
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OPTIMIZERS, OptimizerConfig, make_optimizer
from mnist_pipeline.mlp.parallel import Workers, split
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import BatchMaker, Split, TrainConfig, fit

SIZES = [40, 900, 24, 3]
DIM, CLASSES = SIZES[0], SIZES[-1]
THREADS = (1, 2, 3, 4)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Iterator[None]:
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def workers() -> dict[int, Workers]:
    return {t: Workers(t) for t in THREADS}


def blobs(n: int, seed: int, dtype=np.float32) -> Split:
    """Three Gaussian classes in ``DIM`` dimensions."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(42).standard_normal((CLASSES, DIM))
    y = rng.integers(0, CLASSES, n)
    x = (centers[y] + rng.standard_normal((n, DIM))).astype(dtype)  # (N, D)
    return Split(x, y, np.eye(CLASSES, dtype=dtype)[y])


def make_net(chunks: int, workers: Workers, seed: int = 3, dtype=np.float32, dropout: float = 0.3) -> Network:
    rng = np.random.default_rng(seed)
    return Network(SIZES, "relu", "he_normal", rng, dtype, dropout, chunks=chunks, workers=workers)


def test_the_first_weight_matrix_is_cut_into_pieces_and_the_second_is_not() -> None:
    sizes = [d.params["W"].size for d in make_net(1, Workers(1)).dense]
    assert sizes[0] >= network.MIN_SPLIT_ELEMENTS > sizes[1]


# --- training: the same bytes on any number of threads -----------------------------------------

TRAIN, VAL = blobs(66, seed=1), blobs(20, seed=2)  # 66 = four batches of 16 and one of 2
LR = {"momentum": 0.05, "adam": 0.01}


def trained(chunks: int, workers: Workers, optimizer: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Weights and log rows after 2 epochs (10 steps) of ``fit``, initialized and shuffled from seed 3."""
    net = make_net(chunks, workers)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=LR[optimizer], l2=1e-3, seed=3, dtype="float32")
    opt = OptimizerConfig(optimizer, momentum=0.9)
    rows, _ = fit(net, TRAIN, VAL, cfg, opt, ScheduleConfig("constant"), np.random.default_rng(4))
    return net.state(), rows


def test_the_optimizers_take_both_paths() -> None:
    # momentum: gradients prescaled by -lr, step_rows_prescaled; adam: plain gradients, step_rows
    assert OPTIMIZERS.get("momentum").prescaled and not OPTIMIZERS.get("adam").prescaled


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_training_gives_the_same_bytes_on_any_number_of_threads(workers, chunks: int, optimizer: str) -> None:
    reference, reference_rows = trained(chunks, workers[1], optimizer)
    initial = make_net(chunks, workers[1]).state()
    assert all(not np.array_equal(reference[k], initial[k]) for k in initial)  # every parameter trained
    for threads in THREADS[1:]:
        state, rows = trained(chunks, workers[threads], optimizer)
        assert state.keys() == reference.keys()
        for name, value in state.items():
            assert value.tobytes() == reference[name].tobytes(), f"{name} on {threads} threads"
        assert rows == reference_rows, f"log on {threads} threads"


def test_unsplit_training_on_three_threads_equals_one_thread(workers) -> None:
    # chunks=1 still spreads the gradient pieces (one per weight matrix and bias) over the threads
    one, rows_one = trained(1, workers[1], "adam")
    three, rows_three = trained(1, workers[3], "adam")
    assert all(one[k].tobytes() == three[k].tobytes() for k in one)
    assert rows_one == rows_three


IMAGE = (5, 8)  # DIM = 40 pixels: shifts and elastic distortions apply


@pytest.mark.parametrize(
    ("activation", "dtype", "options"),
    [
        ("gelu", np.float32, {"augment_shift": 2, "label_smoothing": 0.1}),
        ("tanh", np.float64, {"augment_shift": 1, "augment_elastic_alpha": 2.0, "augment_elastic_sigma": 1.0}),
        ("sigmoid", np.float32, {"max_norm": 0.5, "augment_elastic_alpha": 1.0, "augment_elastic_sigma": 1.5}),
        ("relu", np.float32, {"augment_rotate": 10.0, "augment_scale": 0.1, "augment_shear": 0.2, "augment_shift": 1}),
    ],
)
def test_every_option_gives_the_same_bytes_on_any_number_of_threads(workers, activation, dtype, options) -> None:
    # Batches are made inside the row blocks (gather, shift, cast to float64), GELU keeps its input,
    # max-norm runs between steps: none of it may depend on the thread count.
    train = Split(TRAIN.x, TRAIN.y, TRAIN.onehot)

    def run(threads: int) -> tuple[dict[str, np.ndarray], list[dict]]:
        net = Network(SIZES, activation, "glorot_uniform", np.random.default_rng(5), dtype, 0.2, 3, workers[threads])
        dtype_name = np.dtype(dtype).name
        cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, l2=1e-3, seed=5, dtype=dtype_name, **options)
        opt = OptimizerConfig("nesterov", momentum=0.9)
        rows, _ = fit(net, train, VAL, cfg, opt, ScheduleConfig("cosine"), np.random.default_rng(6), IMAGE)
        return net.state(), rows

    reference, reference_rows = run(1)
    for threads in THREADS[1:]:
        state, rows = run(threads)
        assert all(state[k].tobytes() == reference[k].tobytes() for k in reference), f"{threads} threads"
        assert rows == reference_rows


# --- inference and gradients -------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [2, 3, 5])
def test_inference_is_the_unsplit_network_applied_block_by_block(workers, chunks: int) -> None:
    x = np.random.default_rng(5).standard_normal((37, DIM)).astype(np.float32)
    unsplit = make_net(1, workers[1])
    by_blocks = np.concatenate([unsplit.forward(x[rows]) for rows in split(len(x), chunks)])
    for threads in THREADS:
        out = make_net(chunks, workers[threads]).forward(x)
        assert out.tobytes() == by_blocks.tobytes(), f"{threads} threads"
    whole = unsplit.forward(x)
    np.testing.assert_allclose(by_blocks, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def gradients_of(
    net: Network, x: np.ndarray, targets: np.ndarray, path: str, columns: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every parameter's gradient (and, through ``backward``, d loss / d input) of one training pass;
    ``columns`` go to ``train_batch``. With the updates in the pass, every parameter must get one."""
    loss = make_loss("cross_entropy")
    if path == "backward":
        loss.forward(net.forward(x, train=True), targets)
        extra = {"input": net.backward(loss.backward(), input_grad=True)}
    elif path == "train_batch":
        value, _ = net.train_batch(x, targets, loss, columns=columns)
        net.gradients()
        extra = {"loss": np.array(value)}
    else:  # the gradients in the same hand-off as the pass
        updated: list[int] = []
        value, _ = net.train_batch(x, targets, loss, update=lambda i, rows: updated.append(i), columns=columns)
        assert sorted(set(updated)) == list(range(len(net.parameters())))
        extra = {"loss": np.array(value)}
    return {name: g.copy() for name, _, g in net.parameters()} | extra


@pytest.mark.parametrize("path", ["backward", "train_batch", "train_batch(update)"])
@pytest.mark.parametrize(("dtype", "rtol"), [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_chunks_change_the_gradients_by_rounding_only(workers, dtype, rtol: float, path: str) -> None:
    data = blobs(24, seed=6, dtype=dtype)

    def grads(chunks: int, threads: int) -> dict[str, np.ndarray]:
        # same seed: same weights and the same dropout masks (drawn for the whole batch)
        return gradients_of(make_net(chunks, workers[threads], dtype=dtype), data.x, data.onehot, path)

    unsplit, halves = grads(1, 1), grads(2, 1)
    assert unsplit.keys() == halves.keys()
    for name, expected in unsplit.items():
        assert np.abs(expected).max() > 0, name
        np.testing.assert_allclose(halves[name], expected, rtol=rtol, atol=rtol * np.abs(expected).max(), err_msg=name)
    for name, value in grads(2, 3).items():  # and chunks=2 gives the same bits on 3 threads
        assert value.tobytes() == halves[name].tobytes(), name


# --- gradients(update): every row of every parameter, once, when final ---------------------------


@pytest.mark.parametrize("path", ["train_batch", "train_batch(update)", "backward"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_update_is_called_once_per_piece_covering_every_row_once(workers, chunks: int, threads: int, path: str):
    net = make_net(chunks, workers[threads], dropout=0.0)
    params = net.parameters()
    data = blobs(24, seed=7)
    reported: list[tuple[int, range, np.ndarray]] = []  # parameter, its rows, their gradient when reported

    def update(i: int, rows: slice) -> None:
        grad = params[i][2]
        reported.append((i, range(len(grad))[rows], grad[rows].copy()))

    loss = make_loss("cross_entropy")
    if path == "train_batch":
        net.train_batch(data.x, data.onehot, loss)
        net.gradients(update)
    elif path == "train_batch(update)":  # the trainer's: gradients and updates in the same hand-off
        net.train_batch(data.x, data.onehot, loss, update=update)
    else:
        loss.forward(net.forward(data.x, train=True), data.onehot)
        net.backward(loss.backward(), update=update)
    counts = [np.zeros(len(p), dtype=int) for _, p, _ in params]
    for i, rows, _ in reported:
        counts[i][rows.start : rows.stop] += 1
    assert all(np.all(c == 1) for c in counts)  # every row of every parameter exactly once
    # W0 comes in `chunks` row blocks (those of split), every other parameter whole
    assert [sum(i == k for i, _, _ in reported) for k in range(len(params))] == [chunks, 1, 1, 1, 1, 1]
    w0_rows = sorted((rows.start, rows.stop) for i, rows, _ in reported if i == 0)
    assert w0_rows == [(s.start, s.stop) for s in split(DIM, chunks)]
    for i, rows, seen in reported:  # each piece was reported once its gradient was final
        assert np.array_equal(seen, params[i][2][rows.start : rows.stop]), params[i][0]
    assert all(np.abs(g).max() > 0 for _, _, g in params)  # ... and real (not the zeros they start as)


def test_misuse_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="chunks must be at least 1"):
        make_net(0, Workers(1))
    net = make_net(2, Workers(1))
    with pytest.raises(RuntimeError, match="backward needs a training pass first"):
        net.backward(np.zeros((4, CLASSES), np.float32))
    with pytest.raises(RuntimeError, match="gradients needs a back-propagated pass first"):
        net.gradients()
    net.forward(TRAIN.x[:4], train=True)  # a forward pass alone is not enough for gradients
    with pytest.raises(RuntimeError, match="gradients needs a back-propagated pass first"):
        net.gradients()
    for n, parts in ((-1, 2), (5, 0)):
        with pytest.raises(ValueError, match="split needs n >= 0 rows and parts >= 1"):
            split(n, parts)


@pytest.mark.parametrize("name", ["momentum", "adam"])  # a prescaled optimizer and one with plain gradients
@pytest.mark.parametrize("threads", [1, 3])
def test_updates_in_the_same_hand_off_as_the_pass_give_the_bytes_of_two_calls(workers, threads: int, name: str):
    data = blobs(24, seed=8)

    def three_steps(merged: bool) -> dict[str, bytes]:
        net = make_net(3, workers[threads])
        params = net.parameters()
        opt = make_optimizer(OptimizerConfig(name, momentum=0.9), [p for _, p, _ in params], [g for _, _, g in params])
        loss = make_loss("cross_entropy")
        for _ in range(3):
            opt.start_step(0.0 if opt.prescaled else 1e-3)
            if opt.prescaled:
                scale, update = -0.1, partial(opt.step_rows_prescaled, decay=-1e-4)
            else:
                scale, update = None, partial(opt.step_rows, lr=0.01, l2=1e-3)
            if merged:
                net.train_batch(data.x, data.onehot, loss, scale, update=update)
            else:
                net.train_batch(data.x, data.onehot, loss, scale)
                net.gradients(update)
        return {k: p.tobytes() for k, p, _ in params}

    two_calls, before = three_steps(merged=False), make_net(3, workers[1]).state()
    assert all(two_calls[k] != before[k].tobytes() for k in two_calls)  # every parameter moved
    assert three_steps(merged=True) == two_calls


# --- blank input columns: left out of the first layer's products ---------------------------------

BLANK = np.sort(np.random.default_rng(9).choice(DIM, 16, replace=False))  # 16 of the 40 input columns


def with_blank_columns(data: Split, seed: int) -> Split:
    """``data`` with the columns :data:`BLANK` zero in every example and about half of the others' entries zero."""
    x = data.x.copy()
    x[np.random.default_rng(seed).random(x.shape) < 0.5] = 0
    x[:, BLANK] = 0
    return Split(x, data.y, data.onehot)


SPARSE = with_blank_columns(TRAIN, seed=10)


def test_the_networks_here_are_wide_enough_and_the_data_blank_enough_to_skip_columns() -> None:
    assert make_net(1, Workers(1)).skips_blank_columns and len(BLANK) >= network.BLANK_SHARE * DIM


def fit_sparse(
    net: Network, monkeypatch: pytest.MonkeyPatch, columns: bool = True, optimizer: str = "momentum"
) -> tuple[dict, list, int]:
    """Weights, log rows and the number of batches whose products left out blank columns, after 2 epochs
    on :data:`SPARSE`; ``columns=False``: the trainer marks no columns (the plain products)."""
    gathered = []
    gather = Network._gather

    def recorded(self, *args):
        out = gather(self, *args)
        gathered.append(out is not None)
        return out

    monkeypatch.setattr(Network, "_gather", recorded)
    if not columns:
        monkeypatch.setattr(BatchMaker, "epoch_columns", lambda self, perm: None)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=LR[optimizer], l2=1e-3, seed=3, dtype=net.dtype.name)
    opt = OptimizerConfig(optimizer, momentum=0.9)
    rows, _ = fit(net, SPARSE, VAL, cfg, opt, ScheduleConfig("constant"), np.random.default_rng(4))
    monkeypatch.undo()
    return net.state(), rows, sum(gathered)


def test_blank_columns_left_out_change_the_training_by_rounding_only(workers, monkeypatch) -> None:
    skipped, _, gathered = fit_sparse(make_net(3, workers[2], dtype=np.float64), monkeypatch)
    plain, _, none = fit_sparse(make_net(3, workers[2], dtype=np.float64), monkeypatch, columns=False)
    assert (gathered, none) == (10, 0)  # every step of the 2 epochs (4 batches of 16 and one of 2), or none
    for name, expected in plain.items():
        np.testing.assert_allclose(skipped[name], expected, rtol=1e-10, atol=1e-12, err_msg=name)
    assert not np.any(skipped["W0"][BLANK] == make_net(3, workers[1], dtype=np.float64).state()["W0"][BLANK])  # L2


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_blank_columns_left_out_give_the_same_bytes_on_any_number_of_threads(
    workers, monkeypatch, chunks: int, optimizer: str
) -> None:
    reference, reference_rows, gathered = fit_sparse(make_net(chunks, workers[1]), monkeypatch, optimizer=optimizer)
    assert gathered == 10
    for threads in THREADS[1:]:
        state, rows, _ = fit_sparse(make_net(chunks, workers[threads]), monkeypatch, optimizer=optimizer)
        assert all(state[k].tobytes() == reference[k].tobytes() for k in reference), f"{threads} threads"
        assert rows == reference_rows


def test_columns_fall_back_to_the_plain_products_bit_for_bit(workers) -> None:
    # Too few blank columns, or a first layer narrower than MIN_GATHER_WIDTH: the marks change nothing.
    few = np.ones(DIM, bool)
    few[BLANK[: int(network.BLANK_SHARE * DIM) - 1]] = False  # just under the blank share
    x = SPARSE.x[:16] * few  # (B, D), zero where few is False (and in the BLANK columns)
    narrow = [DIM, network.MIN_GATHER_WIDTH - 1, CLASSES]
    cases = [(SIZES, x, few), (narrow, SPARSE.x[:16], np.isin(np.arange(DIM), BLANK, invert=True))]
    for sizes, inputs, columns in cases:
        runs = []
        for marks in (None, columns):
            net = Network(
                sizes, "relu", "he_normal", np.random.default_rng(3), np.float32, chunks=2, workers=workers[2]
            )
            runs.append(gradients_of(net, inputs, SPARSE.onehot[:16], "train_batch", marks))
            assert net._batch["gathered"] is None
        assert {k: v.tobytes() for k, v in runs[0].items()} == {k: v.tobytes() for k, v in runs[1].items()}, sizes


# W0 cut into pieces, W0 in the last piece (under MIN_SPLIT_ELEMENTS), W0 the only layer
@pytest.mark.parametrize("path", ["train_batch", "train_batch(update)"])
@pytest.mark.parametrize("sizes", [SIZES, [DIM, 128, CLASSES], [DIM, 128]])
def test_a_pass_over_the_non_blank_columns_has_the_plain_gradients(workers, sizes: list[int], path: str) -> None:
    x = SPARSE.x[:16].astype(np.float64)
    targets = np.eye(sizes[-1])[SPARSE.y[:16]]
    columns = np.isin(np.arange(DIM), BLANK, invert=True)
    columns[BLANK[: int(network.BLANK_SHARE * DIM)]] = False  # exactly the blank share: still left out
    columns[BLANK[int(network.BLANK_SHARE * DIM) :]] = True
    runs = []
    for marks in (None, columns):
        net = Network(sizes, "relu", "he_normal", np.random.default_rng(3), np.float64, chunks=3, workers=workers[2])
        runs.append(gradients_of(net, x, targets, path, marks))
        assert (net._batch["gathered"] is None) == (marks is None)
    for name, expected in runs[0].items():
        np.testing.assert_allclose(runs[1][name], expected, rtol=1e-12, atol=1e-14, err_msg=name)


def test_columns_of_the_wrong_kind_are_an_error(workers) -> None:
    net = make_net(2, workers[2])
    loss = make_loss("cross_entropy")
    for bad in (np.ones(DIM + 1, bool), np.ones(DIM, np.uint8), np.flatnonzero(np.ones(DIM))):
        with pytest.raises(ValueError, match="columns must be one bool per input column"):
            net.train_batch(SPARSE.x[:8], SPARSE.onehot[:8], loss, columns=bad)
