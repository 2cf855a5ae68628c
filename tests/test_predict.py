"""Predict CLI: image -> vector preprocessing, model checks, IDX inputs, output formats and per-file errors.

Every test builds its own tiny model (784-16-10, seeded); none depends on the pipeline's trained model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline import idx, predict
from mnist_pipeline.cli import run
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import save_npz
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import save_network
from mnist_pipeline.stages import prepare

CLASS_NAMES = [str(c) for c in range(10)]
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def model_meta(**overrides) -> dict:
    meta = {
        "dataset": "mnist",
        "class_names": CLASS_NAMES,
        "image_shape": [28, 28],
        "normalize": "standardize",
        "mean": MNIST_MEAN,
        "std": MNIST_STD,
    }
    return {**meta, **overrides}


def save_model(path: Path, **meta_overrides) -> Network:
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    save_network(path, net, model_meta(**meta_overrides))
    return net


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.npz"
    save_model(path)
    return path


def digit(shape=(28, 28)) -> np.ndarray:
    """A white-on-black uint8 "digit": a thick ring with a gradient, off-centre so flips would show."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot((rows - shape[0] * 0.45) / shape[0], (cols - shape[1] * 0.55) / shape[1])
    ring = (r > 0.18) & (r < 0.3)
    return np.where(ring, 128 + 127 * cols / shape[1], 0).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run the CLI in-process through cli.run exactly as ``python -m`` does: (exit code, stdout, stderr)."""
    code = 0
    try:
        run(lambda: predict.main(argv), "predict")
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# --- preprocessing -----------------------------------------------------------------------------------


def test_black_on_white_png_gives_the_white_on_black_vector(tmp_path: Path) -> None:
    white_on_black = save_png(tmp_path / "wob.png", digit())
    black_on_white = save_png(tmp_path / "bow.png", 255 - digit())
    vectors = {}
    for path in (white_on_black, black_on_white):
        (_,), (gray,) = predict.read_input(path)
        vectors[path.name] = predict.normalize(predict.preprocess(gray, (28, 28), "auto")[None], 0.0, 1.0)
    np.testing.assert_array_equal(vectors["wob.png"], vectors["bow.png"])
    np.testing.assert_array_equal(vectors["wob.png"][0], digit().ravel() / np.float32(255))
    # Forcing "no" keeps the black-on-white polarity (white border), proving auto did invert.
    (_,), (gray,) = predict.read_input(black_on_white)
    assert predict.preprocess(gray, (28, 28), "no")[0, 0] == 255
    assert predict.preprocess(digit(), (28, 28), "yes")[0, 0] == 255


def test_transparent_png_dark_strokes_read_as_dark_ink_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # black strokes on a fully transparent canvas
    rgba[..., 3] = digit()
    (_,), (gray,) = predict.read_input(save_png(tmp_path / "strokes.png", rgba))
    np.testing.assert_allclose(gray, 255 - digit().astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(predict.preprocess(gray, (28, 28)), digit(), atol=1e-3)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    array = (digit().astype(np.uint16) * 257).astype(np.uint16)  # 0..65535
    (_,), (gray,) = predict.read_input(save_png(tmp_path / "deep.png", array))
    np.testing.assert_allclose(gray, digit(), atol=1e-3)


def test_rgb_56x40_is_fitted_keeping_aspect_and_padded_with_background(tmp_path: Path) -> None:
    rgb = np.full((40, 56, 3), 60, dtype=np.uint8)  # (rows, cols): dark grey, 56 wide and 40 high
    rgb[10:30, 14:42] = (255, 255, 255)  # a white block, 28 wide and 20 high, in the middle
    (_,), (gray,) = predict.read_input(save_png(tmp_path / "wide.png", rgb))
    x = predict.preprocess(gray, (28, 28))
    assert x.shape == (28, 28) and x.dtype == np.float32
    # Scale 0.5 -> 28x20 content at rows 4..23 (padding: the grey background); block at rows 9..18, cols 7..20.
    assert np.all(x[:4] == 60) and np.all(x[24:] == 60)
    assert np.flatnonzero(x[:, 14] > 158).tolist() == list(range(9, 19))  # 10 rows high: aspect kept
    assert np.flatnonzero(x[14] > 158).tolist() == list(range(7, 21))  # 14 columns wide
    np.testing.assert_allclose(x[10:18, 8:20], 255, atol=2)


def test_image_of_the_model_shape_is_used_unchanged() -> None:
    np.testing.assert_array_equal(predict.preprocess(digit(), (28, 28)), digit())


def test_center_moves_an_offset_digit_to_mnist_placement() -> None:
    canvas = np.zeros((90, 120), dtype=np.uint8)
    canvas[5:61, 2:58] = digit((56, 56))  # small digit in the top-left corner of a wide canvas
    x = predict.preprocess(canvas, (28, 28), center=True)
    rows, cols = np.nonzero(x > 0.2 * 255)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 20  # fitted into 20x20
    w = x / x.sum()
    assert abs(w.sum(axis=1) @ np.arange(28) - 14) <= 0.5 and abs(w.sum(axis=0) @ np.arange(28) - 14) <= 0.5
    assert x.max() == pytest.approx(255, abs=1)


def test_normalize_matches_the_prepare_stage_bit_for_bit() -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(4, 28, 28)).astype(np.uint8)
    x_train, _, stats = prepare.normalize_splits(images, images[:1], "standardize")
    pixels = np.stack([predict.preprocess(g, (28, 28), "no") for g in images])  # noise: no polarity
    x = predict.normalize(pixels, stats["mean"], stats["std"])
    assert x.dtype == np.float32 and x.shape == (4, 784)
    np.testing.assert_array_equal(x, x_train)
    assert x[0, 0] == pytest.approx((images[0, 0, 0] / 255 - stats["mean"]) / stats["std"], rel=1e-5)


def test_model_normalization_comes_from_its_metadata(tmp_path: Path, model_path: Path) -> None:
    model = predict.load_model(model_path)
    assert (model.mean, model.std, model.image_shape) == (MNIST_MEAN, MNIST_STD, (28, 28))
    records = predict.predict_file(model, save_png(tmp_path / "d.png", digit()), "auto", False)
    expected = (digit().reshape(1, -1) / np.float32(255) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    proba = model.net.predict_proba(expected.astype(np.float32))[0]
    np.testing.assert_allclose(list(records[0]["probabilities"].values()), proba, rtol=1e-6)


# --- model checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"class_names": CLASS_NAMES[:9]}, "9 class names for 10 output units"),
        ({"image_shape": [20, 20]}, "image_shape [20, 20] must be two positive sizes whose product is the 784"),
        ({"image_shape": [-28, -28]}, "image_shape [-28, -28] must be two positive sizes"),  # product 784
        ({"class_names": ["0"] * 10}, "class names repeat ['0']; each class needs its own name"),
        ({"std": 0.0}, "bad normalization"),
        ({"mean": 1e308}, "must normalize to finite float32 values"),  # finite as a float, inf in float32
        ({"std": 1e-300}, "must normalize to finite float32 values"),  # 0 in float32: x / 0
        ({"mean": 0.5, "std": 1e-44}, "must normalize to finite float32 values"),  # a subnormal: 0.5 / std overflows
        ({"normalize": "whiten"}, "bad normalization"),
        ({"mean": "zero"}, "corrupt model metadata"),
        ({"image_shape": [float("inf"), 28]}, "corrupt model metadata (cannot convert float infinity to integer)"),
        ({"mean": 10**400}, "corrupt model metadata (int too large to convert to float)"),
    ],
)
def test_model_metadata_inconsistent_with_network_is_refused(tmp_path: Path, overrides: dict, message: str) -> None:
    save_model(tmp_path / "m.npz", **overrides)
    with pytest.raises(DataError, match=re.escape(message)):
        predict.load_model(tmp_path / "m.npz")


@pytest.mark.parametrize(
    "overrides", [{"mean": 1e308}, {"std": 1e-300}, {"image_shape": [-28, -28]}, {"class_names": ["0"] * 10}]
)
def test_meaningless_metadata_is_one_line_and_exit_1_not_a_wrong_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture, overrides: dict
) -> None:
    save_model(tmp_path / "m.npz", **overrides)
    image = save_png(tmp_path / "d.png", digit())
    for extra in ([], ["--json"]):
        code, out, err = run_cli([*extra, "--model", str(tmp_path / "m.npz"), str(image)], capsys)
        assert code == 1 and out == "" and err.count("\n") == 1 and "m.npz" in err, err


def test_non_finite_probabilities_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    net.dense[0].params["W"][...] = 3e38  # finite weights whose logits overflow float32
    save_network(tmp_path / "huge.npz", net, model_meta())
    image = save_png(tmp_path / "d.png", digit())
    code, out, err = run_cli(["--model", str(tmp_path / "huge.npz"), str(image)], capsys)
    assert code == 1 and out == ""  # the file's line, then the count of failed files, as for a bad file
    assert err.splitlines() == [
        f"error: predict: {image}: the model's probabilities are not finite (NaN or infinite); retrain it",
        "error: predict: 1 of 1 input files failed",
    ]


def test_model_without_class_names_is_refused(tmp_path: Path) -> None:
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    meta = model_meta()
    del meta["class_names"]
    save_network(tmp_path / "m.npz", net, meta)
    with pytest.raises(DataError, match="lacks 'class_names'"):
        predict.load_model(tmp_path / "m.npz")


def test_model_arrays_mismatching_metadata_give_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    state = net.state()
    state["W0"] = state["W0"][:, :8]  # (784, 8) where sizes [784, 16, 10] need (784, 16)
    arch = {"sizes": [784, 16, 10], "activation": "relu", "dtype": "float32", "dropout": 0.0}
    save_npz(tmp_path / "bad.npz", {**model_meta(), **arch}, **state)
    image = save_png(tmp_path / "d.png", digit())
    code, out, err = run_cli(["--model", str(tmp_path / "bad.npz"), str(image)], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "bad.npz" in err and "W0 has shape (784, 8)" in err


def test_model_with_nan_weights_is_refused(tmp_path: Path) -> None:
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    net.dense[1].params["W"][3, 4] = np.nan
    save_network(tmp_path / "m.npz", net, model_meta())
    with pytest.raises(DataError, match=r"W1 holds NaN, infinite or non-float values; retrain"):
        predict.load_model(tmp_path / "m.npz")


@pytest.mark.parametrize("content", [None, b"not a model"])
def test_missing_or_corrupt_model_gives_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes | None
) -> None:
    model = tmp_path / "model.npz"
    if content is not None:
        model.write_bytes(content)
    code, out, err = run_cli(["--model", str(model), str(save_png(tmp_path / "d.png", digit()))], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: predict: ") and str(model) in err
    # another file than the pipeline's model: rebuilding the pipeline is not the fix (nor deleting the file)
    assert err.endswith("; pass --model a model.npz that the train stage wrote\n") and "dvc repro" not in err


# --- inputs, outputs and per-file errors ----------------------------------------------------------


def test_idx_files_give_one_prediction_per_image(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = np.stack([digit(), 255 - digit(), np.roll(digit(), 5, axis=1)])
    idx.write_gz(tmp_path / "three.gz", images)
    (tmp_path / "raw-idx3-ubyte").write_bytes(idx.serialize(images[:2]))
    code, out, _ = run_cli(
        ["--json", "--model", str(model_path), *(str(tmp_path / n) for n in ("three.gz", "raw-idx3-ubyte"))], capsys
    )
    assert code == 0
    records = json.loads(out)
    gz, raw = str(tmp_path / "three.gz"), str(tmp_path / "raw-idx3-ubyte")
    assert [r["file"] for r in records] == [f"{gz}[0]", f"{gz}[1]", f"{gz}[2]", f"{raw}[0]", f"{raw}[1]"]
    # Image 1 is image 0 inverted: auto inversion makes their predictions identical.
    assert records[0]["probabilities"] == records[1]["probabilities"] == records[3]["probabilities"]
    assert records[2]["probabilities"] != records[0]["probabilities"]


def test_json_output_is_sorted_top3_of_probabilities_summing_to_one(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    files = [save_png(tmp_path / f"d{k}.png", np.roll(digit(), 4 * k, axis=0)) for k in range(3)]
    code, out, err = run_cli(["--json", "--model", str(model_path), *map(str, files)], capsys)
    assert code == 0 and err == ""
    records = json.loads(out)
    assert [r["file"] for r in records] == [str(f) for f in files]
    for r in records:
        assert set(r) == {"file", "prediction", "top3", "probabilities"}
        assert list(r["probabilities"]) == CLASS_NAMES
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        top = [t["probability"] for t in r["top3"]]
        assert len(top) == 3 and top == sorted(top, reverse=True)
        assert top == sorted(r["probabilities"].values(), reverse=True)[:3]
        assert [r["probabilities"][t["class"]] for t in r["top3"]] == top
        assert r["prediction"] == r["top3"][0]["class"] == max(r["probabilities"], key=r["probabilities"].get)


def test_bad_and_missing_files_are_reported_while_good_ones_print(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = save_png(tmp_path / "good.png", digit())
    missing = tmp_path / "missing.png"
    text = tmp_path / "notes.png"
    text.write_text("just some text\n")
    labels = tmp_path / "labels.gz"
    idx.write_gz(labels, np.arange(5, dtype=np.uint8))
    argv = ["--model", str(model_path), str(missing), str(good), str(text), str(labels)]
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"{re.escape(str(good))}: \d  \(\d [01]\.\d{{4}}(, \d [01]\.\d{{4}}){{2}}\)", lines[0]
    )
    errors = err.splitlines()
    assert len(errors) == 4
    assert errors[0] == f"error: predict: {missing}: no such file"
    assert errors[1].startswith(f"error: predict: {text}: ") and "neither an image" in errors[1]
    assert errors[2].startswith(f"error: predict: {labels}: ") and "2049 (labels)" in errors[2]
    assert errors[3] == "error: predict: 3 of 4 input files failed"


def test_truncated_png_is_a_per_file_error(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = save_png(tmp_path / "full.png", digit((200, 200))).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    code, out, err = run_cli(["--model", str(model_path), str(tmp_path / "cut.png")], capsys)
    assert code == 1 and out == ""
    assert err.splitlines()[0].startswith(f"error: predict: {tmp_path / 'cut.png'}: corrupt image")


def test_an_image_pillow_warns_about_is_a_per_file_error(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A TIFF whose PhotometricInterpretation tag claims 1000 values past the end of the file: Pillow
    # would warn on stderr, skip the tag and guess; a corrupt file is refused instead.
    Image.new("L", (8, 8), 200).save(tmp_path / "ok.tif")
    data = bytearray((tmp_path / "ok.tif").read_bytes())
    ifd = int.from_bytes(data[4:8], "little")
    entries = [ifd + 2 + 12 * i for i in range(int.from_bytes(data[ifd : ifd + 2], "little"))]
    (entry,) = [e for e in entries if int.from_bytes(data[e : e + 2], "little") == 262]
    data[entry + 4 : entry + 8] = (1000).to_bytes(4, "little")  # its count
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    code, out, err = run_cli(["--model", str(model_path), str(tmp_path / "bad.tif")], capsys)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"error: predict: {tmp_path / 'bad.tif'}: corrupt image (Tag data larger than file. Skipping tag 262)",
        "error: predict: 1 of 1 input files failed",
    ]


def test_a_photo_whose_exif_is_cut_short_is_still_predicted_without_a_warning(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A JPEG whose EXIF ImageDescription claims 100,000 bytes past the end (phones cut EXIF short):
    # Pillow warns about the tag, but the pixels are whole, so the photo is predicted and nothing printed.
    exif = Image.Exif()
    exif[270] = "a digit"
    Image.fromarray(digit()).save(tmp_path / "ok.jpg", exif=exif.tobytes())
    data = bytearray((tmp_path / "ok.jpg").read_bytes())
    tiff = data.find(b"Exif\0\0") + 6
    order = "little" if data[tiff : tiff + 2] == b"II" else "big"
    ifd = tiff + int.from_bytes(data[tiff + 4 : tiff + 8], order)
    entries = [ifd + 2 + 12 * i for i in range(int.from_bytes(data[ifd : ifd + 2], order))]
    (entry,) = [e for e in entries if int.from_bytes(data[e : e + 2], order) == 270]
    data[entry + 4 : entry + 8] = (100_000).to_bytes(4, order)  # its count
    (tmp_path / "cut.jpg").write_bytes(bytes(data))
    code, out, err = run_cli(["--model", str(model_path), str(tmp_path / "ok.jpg"), str(tmp_path / "cut.jpg")], capsys)
    assert code == 0 and err == ""
    first, second = out.splitlines()
    assert second.startswith(f"{tmp_path / 'cut.jpg'}: ") and first.split(": ", 1)[1] == second.split(": ", 1)[1]


def test_module_entry_point_runs(tmp_path: Path, model_path: Path) -> None:
    image = save_png(tmp_path / "d.png", 255 - digit((100, 100)))
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", "--model", str(model_path), str(image), "nope.png"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{image}: ") and proc.stdout.count("\n") == 1
    assert "error: predict: nope.png: no such file" in proc.stderr


def test_unknown_invert_choice_is_rejected() -> None:
    with pytest.raises(ValueError, match="auto, yes, no"):
        predict.preprocess(digit(), (28, 28), "maybe")
    with pytest.raises(SystemExit):
        predict.parse_args(["--invert", "maybe", "x.png"])
