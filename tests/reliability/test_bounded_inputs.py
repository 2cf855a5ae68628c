"""Hostile inputs, bounded: tiny files that claim or inflate to gigabytes, special files, deep nesting,
secrets in URLs and impossible sizes, each refused with one line, in bounded memory and time.

Each attack runs the real command (``python -m ...``) as a child under a 1 GiB address-space cap and
a time bound (:mod:`helpers.capped`) and must end with exit status 1, one ``error:`` line naming the
file or key, no traceback, and a peak RSS far below the cap. Without the guard under test, each one
instead runs out of memory (a ``MemoryError`` traceback under the cap), hangs, succeeds, or leaks.

One test per kind of attack:

1. IDX gzip bombs, for ``prepare`` and ``predict`` (``idx.read_stream``: header vs a cap, incremental reading);
2. ``.npz`` bombs and lying ``.npy`` headers, for ``featurize`` and ``predict --model`` (``io.load_npz``);
3. FIFOs and devices, in ``predict`` inputs, ``data/raw``, ``params.yaml`` and the mirror folder
   (``paths.open_regular``);
4. images over the pixel cap and Pillow's decompression-bomb check (``predict.decode_image``), and IDX
   files of millions of tiny images (``predict.MAX_IDX_IMAGES``: each becomes a 28x28 float32 image);
5. deep nesting in ``params.yaml`` and in model metadata, and ``make params`` errors (``compose``);
6. credentials in mirror URLs (``data_config.mask_credentials``, used for every line ``download`` prints);
7. sizes that would exhaust memory or time, refused by validation (``Config.validate`` and friends);
8. files read whole and parsed (params.yaml, conf/, gates, metrics, search spaces), refused by size
   before a byte is parsed (``paths.read_capped_text``).
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import bombs
from helpers.capped import Capped, python_module, run_capped
from mnist_pipeline import config
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import save_network
from mnist_pipeline.stages import featurize, prepare

pytestmark = pytest.mark.timeout(120)

BOMB_MIB = 1200  # what the bombs inflate to: more than the 1 GiB readers' caps and the 1 GiB memory cap
PEAK_RSS = 256 << 20  # "well under the cap": every refusal here stays below a quarter of it
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
PREDICT_SUMMARY = "error: predict: 1 of 1 input files failed"


def assert_refused(run: Capped, *needles: str) -> str:
    """Exit 1 in time, one ``error:`` line holding every needle, no traceback, small peak RSS; that line."""
    output = f"exit {run.returncode}, peak RSS {run.peak_rss >> 20} MiB\n{run.stderr}"
    assert not run.timed_out, output
    assert run.returncode == 1, output
    assert "Traceback" not in run.stderr, output
    errors = [line for line in run.error_lines() if line != PREDICT_SUMMARY]  # predict adds it after the file's
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], output
    assert run.peak_rss < PEAK_RSS, output
    return errors[0]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A small valid model (784-16-10) for ``predict``."""
    path = tmp_path / "model.npz"
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    meta = {"class_names": [str(c) for c in range(10)], "image_shape": [28, 28]}
    save_network(path, net, {**meta, "dataset": "mnist", "normalize": "scale", "mean": 0.0, "std": 1.0})
    return path


@pytest.fixture
def digit_png(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(path)
    return path


def predict(cwd: Path, model: Path, *inputs: str | Path, timeout: float = 60) -> Capped:
    return run_capped(python_module("mnist_pipeline.predict", "--model", model, *inputs), cwd, timeout=timeout)


def stage(name: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> Capped:
    return run_capped(python_module(f"mnist_pipeline.stages.{name}"), cwd, env, timeout=timeout)


# --- 1. IDX: header against a cap, payload read incrementally -----------------------------------

IDX_BOMBS = {
    # one valid 28x28 image, then 1.2 GiB of zeros: refused after reading at most cap + 1 bytes
    "trailing-zeros": (struct.pack(">HBBIII", 0, 0x08, 3, 1, 28, 28), "trailing bytes after the (1, 28, 28) payload"),
    # a header declaring one 40000x30000 image (1.2 GB): refused from the header, before inflating
    "huge-dims": (struct.pack(">HBBIII", 0, 0x08, 3, 1, 40000, 30000), "need 1200000016 bytes, more than the"),
}


@functools.cache
def idx_bomb(kind: str) -> bytes:
    return bombs.gzip_bomb(IDX_BOMBS[kind][0], BOMB_MIB)


@pytest.mark.parametrize("command", ["prepare", "predict"])
@pytest.mark.parametrize("kind", sorted(IDX_BOMBS))
def test_idx_gzip_bomb_is_refused_without_inflating_it(tiny_workspace, model_file, command, kind):
    raw = tiny_workspace.root / "data" / "raw" / TRAIN_IMAGES
    raw.write_bytes(idx_bomb(kind))  # 1.2 MB on disk
    assert raw.stat().st_size < 2 * bombs.MIB

    if command == "prepare":
        run = stage("prepare", tiny_workspace.root)
    else:
        run = predict(tiny_workspace.root, model_file, f"data/raw/{TRAIN_IMAGES}")

    assert_refused(run, f"data/raw/{TRAIN_IMAGES}", IDX_BOMBS[kind][1])
    assert not (tiny_workspace.root / "data" / "prepared").exists()


# --- 2. .npz: entry sizes and .npy headers before anything is loaded ------------------------------


@functools.cache
def npz_attack(kind: str) -> bytes:
    if kind == "header-claims-1e10-elements":
        return bombs.npz_with_member("x.npy", bombs.npy_header((10**10,), "<f8"))
    return bombs.npz_bomb("x.npy", BOMB_MIB)  # 1.2 MB that inflates to 1.2 GiB


NPZ_MESSAGES = {
    "header-claims-1e10-elements": "x.npy claims shape (10000000000,) of float64 (80000000000 bytes)",
    "compressed-bomb": f"its arrays take {BOMB_MIB * bombs.MIB + 128} bytes uncompressed, more than the",
}


@pytest.mark.parametrize("command", ["featurize", "predict"])
@pytest.mark.parametrize("kind", sorted(NPZ_MESSAGES))
def test_npz_bomb_or_lying_header_is_refused_before_loading(tiny_workspace, digit_png, command, kind):
    path = tiny_workspace.root / "data" / "prepared" / "train.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(npz_attack(kind))
    assert path.stat().st_size < 2 * bombs.MIB

    if command == "featurize":
        run = stage("featurize", tiny_workspace.root)
    else:
        run = predict(tiny_workspace.root, Path("data/prepared/train.npz"), digit_png)

    assert_refused(run, "data/prepared/train.npz", NPZ_MESSAGES[kind])
    assert not (tiny_workspace.root / "data" / "features").exists()


# --- 3. special files: refused before a byte is read --------------------------------------------

SPECIAL_FILES = ["predict-dev-zero", "predict-fifo", "prepare-fifo-in-data-raw", "params-yaml-fifo", "mirror-fifo"]


@pytest.mark.parametrize("case", SPECIAL_FILES)
def test_fifos_and_devices_are_refused_up_front(tiny_workspace, model_file, case):
    root = tiny_workspace.root
    raw = root / "data" / "raw" / TRAIN_IMAGES
    if case == "predict-dev-zero":
        run, named, kind = predict(root, model_file, "/dev/zero", timeout=20), "/dev/zero", "a character device"
    elif case == "predict-fifo":
        os.mkfifo(root / "digit.png")  # nobody ever writes: reading it would block forever
        run, named, kind = predict(root, model_file, "digit.png", timeout=20), "digit.png", "a FIFO"
    elif case == "prepare-fifo-in-data-raw":
        raw.unlink()
        os.mkfifo(raw)
        run, named, kind = stage("prepare", root, timeout=20), f"data/raw/{TRAIN_IMAGES}", "a FIFO"
    elif case == "params-yaml-fifo":
        (root / "params.yaml").unlink()
        os.mkfifo(root / "params.yaml")
        run, named, kind = stage("prepare", root, timeout=20), "params.yaml", "a FIFO"
    else:  # DATA_MIRROR is a folder whose files are FIFOs; the only other mirror refuses connections
        mirror = root / "mirror"
        mirror.mkdir()
        for name in tiny_workspace.mnist.paths:
            os.mkfifo(mirror / tiny_workspace.mnist.paths[name].name)
        shutil.rmtree(root / "data" / "raw")
        tiny_workspace.write_params(**{"dataset.mirrors": ["http://127.0.0.1:1/"], "download.retries": 0})
        env = {"DATA_MIRROR": str(mirror), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        run, named, kind = stage("download", root, env, timeout=20), f"{mirror}/{TRAIN_IMAGES}", "a FIFO"

    assert_refused(run, named, f"is {kind}, not a regular file")


# --- 4. images: a pixel cap from the header, and Pillow's bomb check as an error ----------------


@pytest.mark.parametrize("case", ["over-the-pixel-cap", "pillow-decompression-bomb"])
def test_huge_images_are_refused_before_decoding(tmp_path, model_file, case):
    path = tmp_path / "huge.png"
    if case == "over-the-pixel-cap":  # a real 6000x6000 image (36 MP, under Pillow's own 89 MP limit)
        Image.new("L", (6000, 6000)).save(path)
        needle = "6000x6000 image has 36000000 pixels, more than the 25000000 accepted"
    else:  # a header declaring 10000x10000 (100 MP): Pillow warns, we refuse
        path.write_bytes(bombs.png_header(10000, 10000))
        needle = "refused by Pillow's decompression-bomb check (Image size (100000000 pixels) exceeds limit"

    run = predict(tmp_path, model_file, path)

    assert_refused(run, str(path), needle)
    assert run.stdout == ""


def test_idx_file_of_millions_of_tiny_images_is_refused_by_its_count(tmp_path, model_file):
    # 5 MB of 1x1 images, well under the 64 MiB read cap: 15.7 GB once each is 28x28 float32
    n = 5_000_000
    path = tmp_path / "tiny.idx.gz"
    path.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 0x08, 3, n, 1, 1) + b"\x80" * n))

    run = predict(tmp_path, model_file, path)

    assert_refused(run, str(path), f"{n} images, more than the 100000 accepted per IDX file; split it")
    assert run.stdout == ""


# --- 5. deep nesting and configuration errors: one line, not a traceback -------------------------

DEPTH = 20_000


@pytest.mark.parametrize(
    "case",
    [
        "deep-params-yaml",
        "deep-model-metadata",
        "deep-conf-file",
        "compose-yaml-tag",
        "compose-bad-override",
        "compose-400-digit-number",
        "compose-5001-digit-number",
    ],
)
def test_deep_nesting_and_compose_errors_give_one_line(tmp_path, repo_root, digit_png, case):
    if case == "deep-params-yaml":
        (tmp_path / "params.yaml").write_text("model: " + "[" * DEPTH + "]" * DEPTH + "\n", encoding="utf-8")
        run, needles = stage("prepare", tmp_path), ("params.yaml is nested too deeply",)
    elif case == "deep-model-metadata":
        model = tmp_path / "model.npz"
        np.savez(model, meta=np.array("[" * DEPTH + "]" * DEPTH), W0=np.zeros((784, 10), np.float32))
        run, needles = predict(tmp_path, model, digit_png), (str(model), "metadata nested too deeply")
    else:
        shutil.copytree(repo_root / "conf", tmp_path / "conf")
        overrides: list[str] = []
        if case == "deep-conf-file":
            with open(tmp_path / "conf" / "config.yaml", "a", encoding="utf-8") as f:
                f.write("deep: " + "[" * 5000 + "]" * 5000 + "\n")
            needles = ("conf/config.yaml", "a config file is nested too deeply")
        elif case == "compose-yaml-tag":
            with open(tmp_path / "conf" / "model" / "mlp_256_128.yaml", "a", encoding="utf-8") as f:
                f.write('evil: !!python/object/apply:os.system ["echo pwned"]\n')
            needles = ("could not determine a constructor for the tag", "conf/model/mlp_256_128.yaml")
        elif case == "compose-bad-override":
            overrides = ["train.lr=["]
            needles = ("cannot compose conf/ with overrides train.lr=[", "no viable alternative at input")
        elif case == "compose-400-digit-number":  # beyond float: refused by params, not an OverflowError
            overrides = ["train.epochs=1" + "0" * 400]
            needles = ("train.epochs=1000", "(321 characters left out)", "must be an integer of at most 308 digits")
        else:  # beyond what Python reads as an int by default: refused by compose, not a ValueError
            overrides = ["train.lr=1" + "0" * 5000]
            needles = (
                "cannot compose conf/ with overrides train.lr=1000",
                "left out",
                "an integer of over 4300 digits",
            )
        run = run_capped(python_module("mnist_pipeline.compose", *overrides), tmp_path)
        assert not (tmp_path / "params.yaml").exists()

    assert_refused(run, *needles)
    assert len(run.stderr.splitlines()) == 1  # nothing else: no warning, no log, no traceback


# --- 6. credentials in URLs: masked in every message and log line --------------------------------

CREDENTIALS = {
    # case: (DATA_MIRROR, configured mirror, secret, what the error line must say, attempts logged with it)
    "user-and-password": (
        "http://alice:s3cret-pw@127.0.0.1:1/",
        None,
        "s3cret-pw",
        ["could not fetch", "DATA_MIRROR=http://alice:***@127.0.0.1:1/: cannot connect"],
        2,
    ),
    "token-only": (
        "http://tok-9f8e7d@127.0.0.1:1/mnist/",
        None,
        "tok-9f8e7d",
        ["could not fetch", "DATA_MIRROR=http://***@127.0.0.1:1/mnist/: cannot connect"],
        2,
    ),
    "in-params-mirror": (
        None,
        "http://bob:hunter2@127.0.0.1:1/",
        "hunter2",
        ["could not fetch", "(http://bob:***@127.0.0.1:1/: cannot connect"],
        2,
    ),
    "invalid-params-mirror": (  # refused by validation, before any request: the message shows it too
        None,
        "http://carol:pa55word@127.0.0.1:1",
        "pa55word",
        ["dataset.mirrors[0]='http://carol:***@127.0.0.1:1' is invalid"],
        0,
    ),
}


@pytest.mark.parametrize("case", sorted(CREDENTIALS))
def test_credentials_in_urls_are_masked_in_every_line(tiny_workspace, case):
    mirror_env, configured, secret, needles, attempts = CREDENTIALS[case]
    shutil.rmtree(tiny_workspace.root / "data" / "raw")
    mirrors = [configured] if configured else ["http://127.0.0.1:1/"]
    tiny_workspace.write_params(**{"dataset.mirrors": mirrors, "download.retries": 1, "download.backoff": 0.0})
    env = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **({"DATA_MIRROR": mirror_env} if mirror_env else {})}

    run = stage("download", tiny_workspace.root, env, timeout=30)

    assert_refused(run, *needles)
    masked = needles[-1].split("@")[0].split("=")[-1].lstrip("(")  # e.g. http://alice:***
    logged = [line for line in run.stderr.splitlines() if "(attempt" in line and masked in line]
    assert len(logged) == attempts, run.stderr  # each attempt's log line names the source, masked
    assert secret not in run.stderr + run.stdout


# --- 7. sizes that would exhaust memory or time: refused by validation ---------------------------


def test_huge_hidden_layer_is_refused_before_allocating(tiny_workspace):
    prepare.main()  # real features, so that without the bound train would go on to build the network
    featurize.main()
    tiny_workspace.write_params(**{"model.hidden": [1_000_000]})

    run = stage("train", tiny_workspace.root)

    line = assert_refused(run, "model.hidden[0]=1000000 is invalid: must be at most 65536 units")
    assert line.endswith("(a 784x1000000 float32 layer needs 3.1 GB)")
    assert not (tiny_workspace.root / "data" / "model").exists()


LIMITS = {
    # case: (params overrides, what the message must say)
    "hidden-width": ({"model.hidden": [100_000]}, "model.hidden[0]=100000 is invalid: must be at most 65536 units"),
    "hidden-total": ({"model.hidden": [60_000, 2_000]}, "at most 67108864 weights (784-60000-2000-10 has 167060000"),
    "hidden-depth": ({"model.hidden": [8] * 17}, "model.hidden has 17 layers, more than the 16 allowed"),
    "epochs": ({"train.epochs": 5_000}, "train.epochs=5000 is invalid: must be at most 1000"),
    "batch-size": ({"train.batch_size": 100_000}, "train.batch_size=100000 is invalid: must be at most 65536 examples"),
    "batch-activations": (
        {"model.hidden": [4096], "train.batch_size": 60_000},
        "train.batch_size=60000 is invalid: must be at most 16344 for this network (60000 x 4106 units of 784-4096-10",
    ),
    "evaluate-batch-size": ({"evaluate.batch_size": 100_000}, "evaluate.batch_size=100000 is invalid: must be at most"),
    "val-size": ({"featurize.val_size": 2_000_000}, "featurize.val_size=2000000 is invalid: must be at most 1000000"),
}


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_resource_bounds_name_the_key_and_the_cost(params_dict, case):
    overrides, message = LIMITS[case]
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params_dict[section][key] = value

    with pytest.raises(ConfigError) as err:
        config.from_dict(params_dict)

    assert message in str(err.value)
    costs = (" GB", " days", " allowed (each is a matrix product", "held in memory")
    assert any(cost in str(err.value) for cost in costs), str(err.value)


def test_every_preset_is_within_the_bounds(repo_root):
    from mnist_pipeline import compose

    for preset in sorted(p.stem for p in (repo_root / "conf" / "experiment").glob("*.yaml")):
        config.from_dict(yaml.safe_load(compose.compose([f"experiment={preset}"], repo_root / "conf")))


# --- 8. files read whole: their size against a cap, before a byte is parsed ----------------------

PADDED_MIB = 100  # what a padded config file holds: real text, parsed for minutes without the cap
METRICS = '{"test": {"accuracy": 0.99}}'


def padded(path: Path, head: str, tail: str = "", mib: int = PADDED_MIB) -> None:
    """``head``, ``mib`` MiB of the letter x, then ``tail``: a valid file of its kind, only huge."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(head)
        for _ in range(mib):
            f.write("x" * bombs.MIB)
        f.write(tail)


def check_metrics(cwd: Path, *args: str | Path) -> Capped:
    return run_capped(python_module("mnist_pipeline.check_metrics", *args), cwd, timeout=30)


@pytest.mark.parametrize("case", ["metrics-json-1gb", "params-yaml-string", "gates-yaml-comment", "conf-comment"])
def test_files_read_whole_are_refused_by_size_before_parsing(tmp_path, repo_root, case):
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    shutil.copy(repo_root / "params.yaml", tmp_path)
    (tmp_path / "metrics.json").write_text(METRICS, encoding="utf-8")
    gates = ("--metrics", "metrics.json", "--gates", "conf/gates.yaml")
    if case == "metrics-json-1gb":  # a valid accuracy, then a gigabyte (sparse on disk) in one key
        with open(tmp_path / "metrics.json", "w", encoding="utf-8") as f:
            f.write(METRICS[:-1] + ', "pad": "')
            f.truncate(1 << 30)
        run, named = check_metrics(tmp_path, *gates), "metrics.json is 1,073,741,824 bytes"
    elif case == "params-yaml-string":
        padded(tmp_path / "params.yaml", "preset: {name: '", "'}\n" + (repo_root / "params.yaml").read_text())
        run, named = stage("evaluate", tmp_path, timeout=30), "params.yaml is 104,85"
    elif case == "gates-yaml-comment":
        padded(tmp_path / "conf" / "gates.yaml", "# ", "\n" + (repo_root / "conf" / "gates.yaml").read_text())
        run, named = check_metrics(tmp_path, *gates), "conf/gates.yaml is 104,85"
    else:
        model = tmp_path / "conf" / "model" / "mlp_256_128.yaml"
        padded(model, "# ", "\n" + model.read_text(), mib=2)
        run, named = run_capped(python_module("mnist_pipeline.compose"), tmp_path, timeout=30), "mlp_256_128.yaml is"
        assert (tmp_path / "params.yaml").read_bytes() == (repo_root / "params.yaml").read_bytes()

    line = assert_refused(run, named, "-byte cap on files read whole")
    assert run.stdout == ""
    assert "OK" not in line


def alias_bomb(levels: int = 8) -> str:
    """A flow sequence of a few hundred bytes whose aliases stand for 10**(levels + 1) items."""
    anchors = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    anchors += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(anchors) + "]"


@pytest.mark.parametrize("case", ["params-yaml", "gates-yaml", "conf-file"])
def test_yaml_aliases_are_refused_before_anything_expands_them(tmp_path, repo_root, case):
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    params = (repo_root / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    (tmp_path / "metrics.json").write_text(METRICS, encoding="utf-8")
    gates = ("--metrics", "metrics.json", "--gates", "conf/gates.yaml")
    if case == "params-yaml":  # its value goes into the error message about its type
        (tmp_path / "params.yaml").write_text(params.replace("kernels: portable", f"kernels: {alias_bomb()}"))
        run, named = check_metrics(tmp_path, *gates), "params.yaml is not valid YAML"
    elif case == "gates-yaml":
        (tmp_path / "conf" / "gates.yaml").write_text(f"mnist: {{default: {{test.accuracy: {alias_bomb()}}}}}\n")
        run, named = check_metrics(tmp_path, *gates), "conf/gates.yaml is not valid YAML"
    else:  # Hydra would expand it while composing (26 s, or a crash, one level more)
        with open(tmp_path / "conf" / "config.yaml", "a", encoding="utf-8") as f:
            f.write(f"bomb: {alias_bomb(7)}\n")
        run, named = run_capped(python_module("mnist_pipeline.compose"), tmp_path, timeout=30), "conf/config.yaml"

    assert_refused(run, named, "YAML aliases (*a0) are not accepted")
    if case == "conf-file":
        assert (tmp_path / "params.yaml").read_text() == params  # compose wrote nothing


@pytest.mark.parametrize("case", ["hydra-search-path", "linked-group-folder"])
def test_compose_reads_no_file_outside_the_checks(tmp_path, repo_root, case):
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    outside = tmp_path / "outside" / "dataset"
    outside.mkdir(parents=True)
    shutil.copy(repo_root / "conf" / "dataset" / "mnist.yaml", outside)
    padded(outside / "bigone.yaml", "# ", "\n" + (repo_root / "conf" / "dataset" / "mnist.yaml").read_text(), mib=2)
    if case == "hydra-search-path":
        overrides = [f"hydra.searchpath=[file://{outside.parent}]", "dataset=bigone"]
        needles = ("'hydra.searchpath=[file://", "sets Hydra itself, which no params key needs")
    else:
        shutil.rmtree(tmp_path / "conf" / "dataset")
        (tmp_path / "conf" / "dataset").symlink_to(outside, target_is_directory=True)
        overrides, needles = ["dataset=bigone"], ("conf/dataset/bigone.yaml is 2,", "-byte cap on files read whole")

    run = run_capped(python_module("mnist_pipeline.compose", *overrides), tmp_path, timeout=30)

    assert_refused(run, *needles)
    assert not (tmp_path / "params.yaml").exists()
