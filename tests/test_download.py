"""Tests for ``stages/download.py`` against a real HTTP server on 127.0.0.1.

The server (``tests/reliability/http_faults.py``) runs in a thread on port 0 and
is shut down after each test; every request has short connect/read timeouts.
Files are small synthetic blobs with their own sha256. Fault injection (bad
statuses, truncation, stalls, oversize bodies, redirects) lives in
``tests/reliability/test_download_faults.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import paths
from mnist_pipeline.config import DownloadConfig
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.stages import download as dl
from reliability.http_faults import FaultyServer, ok, status
from reliability.support import Blob, corrupt, http_sources, listing, make_blob

pytestmark = pytest.mark.timeout(30)

CFG = DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=1, backoff=0.0)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyServer]:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    with FaultyServer() as running:
        yield running


@pytest.fixture
def blob() -> Blob:
    return make_blob("tiny-labels-idx1-ubyte.gz", size=50_000)


def fetch(server: FaultyServer, blob: Blob, dest: Path, sources=None) -> str:
    srcs = sources if sources is not None else http_sources(server, "m1", "m2")
    with dl.new_session() as session:
        return dl.fetch(blob.spec, srcs, dest, CFG, session, sleep=lambda seconds: None)


def assert_verified(dest: Path, blob: Blob) -> None:
    assert listing(dest) == [blob.spec.name]
    assert (dest / blob.spec.name).read_bytes() == blob.data


def test_good_file_is_verified_and_renamed_in(server, blob, tmp_path):
    server.route(blob.route("m1"), ok(blob.data))

    assert fetch(server, blob, tmp_path) == "m1"

    assert_verified(tmp_path, blob)
    assert server.requests == [blob.route("m1")]


def test_bad_checksum_on_first_source_falls_back_to_second(server, blob, tmp_path):
    server.route(blob.route("m1"), ok(corrupt(blob.data)))
    server.route(blob.route("m2"), ok(blob.data))

    assert fetch(server, blob, tmp_path) == "m2"

    assert_verified(tmp_path, blob)
    assert server.requests == [blob.route("m1"), blob.route("m2")]


def test_all_sources_bad_gives_one_line_listing_each_and_leaves_nothing(server, blob, tmp_path):
    server.route(blob.route("m1"), ok(corrupt(blob.data)))
    server.route(blob.route("m2"), status(404))
    dest = tmp_path / "raw"

    with pytest.raises(DataError) as err:
        dl.download([blob.spec], http_sources(server, "m1", "m2"), dest, CFG)

    message = str(err.value)
    assert "\n" not in message
    assert f"could not fetch {blob.spec.name} from any source" in message
    assert f"m1: checksum mismatch for {blob.spec.name}" in message
    assert "m2: HTTP 404 Not Found" in message
    assert f"set {dl.MIRROR_ENV} to a directory or http(s) URL" in message
    assert listing(dest) == []  # no final, partial or .part file


def test_present_and_verified_file_is_skipped_without_any_request(server, blob, tmp_path):
    (tmp_path / blob.spec.name).write_bytes(blob.data)
    server.route(blob.route("m1"), ok(blob.data))

    assert fetch(server, blob, tmp_path) == "already present"

    assert server.requests == []
    assert_verified(tmp_path, blob)


def test_present_but_corrupt_file_is_fetched_again(server, blob, tmp_path):
    (tmp_path / blob.spec.name).write_bytes(corrupt(blob.data))
    server.route(blob.route("m1"), ok(blob.data))

    assert fetch(server, blob, tmp_path) == "m1"

    assert server.count(blob.route("m1")) == 1
    assert_verified(tmp_path, blob)


def test_data_mirror_directory_is_tried_first_and_verified(server, blob, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / blob.spec.name).write_bytes(blob.data)
    server.route(blob.route("m1"), ok(blob.data))
    dest = tmp_path / "raw"
    dest.mkdir()

    srcs = dl.sources([server.url("m1/")], str(mirror))

    assert fetch(server, blob, dest, srcs) == f"{dl.MIRROR_ENV}={mirror}"
    assert server.requests == []
    assert_verified(dest, blob)


def test_corrupt_file_in_data_mirror_directory_is_rejected_like_any_source(server, blob, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / blob.spec.name).write_bytes(corrupt(blob.data))
    server.route(blob.route("m1"), ok(blob.data))
    dest = tmp_path / "raw"
    dest.mkdir()

    assert fetch(server, blob, dest, dl.sources([server.url("m1/")], str(mirror))) == server.url("m1/")

    assert server.count(blob.route("m1")) == 1
    assert_verified(dest, blob)


def test_data_mirror_url_goes_through_the_same_verification(server, blob, tmp_path):
    server.route(blob.route("env"), ok(corrupt(blob.data)))
    server.route(blob.route("m1"), ok(blob.data))

    srcs = dl.sources([server.url("m1/")], server.url("env"))  # no trailing slash: added

    assert [s.base for s in srcs] == [server.url("env/"), server.url("m1/")]
    assert fetch(server, blob, tmp_path, srcs) == server.url("m1/")
    assert server.requests == [blob.route("env"), blob.route("m1")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{tmp}/no/such/dir", "is not an existing directory"),
        ("file://{tmp}/no/such/dir", "is not an existing directory"),
        ("http://", "is not a valid base URL"),
        ("http:///mnist/", "is not a valid base URL"),
        ("http://exa mple.com/mnist/", "is not a valid base URL"),
        ("http://example.com/mnist/?x=1", "is not a valid base URL"),
        ("http://[::1/mnist/", "is not a valid URL"),
        ("http://example.com:99999/mnist/", "is not a valid URL"),
        ("http://example.com:http/mnist/", "is not a valid URL"),
        ("ftp://example.com/mnist/", "unsupported scheme 'ftp'"),
    ],
)
def test_bad_data_mirror_fails_clearly_before_any_network_call(
    server, blob, tmp_path, monkeypatch, params_dict, value, reason
):
    value = value.format(tmp=tmp_path)
    params_dict["dataset"]["mirrors"] = [server.url("m1/")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(dl.MIRROR_ENV, value)

    with pytest.raises(ConfigError) as err:
        dl.main()

    assert str(err.value).startswith(f"{dl.MIRROR_ENV}={value}")
    assert reason in str(err.value)
    assert "\n" not in str(err.value)
    assert server.requests == []
    assert not (tmp_path / "data").exists()


def test_main_fetches_every_dataset_file_from_data_mirror(server, tmp_path, monkeypatch, params_dict, tiny_mnist_dir):
    params_dict["dataset"]["mirrors"] = [server.url("m1/")]
    params_dict["dataset"]["files"] = tiny_mnist_dir.file_specs()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "params.yaml").write_text(yaml.safe_dump(params_dict), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv(dl.MIRROR_ENV, str(tiny_mnist_dir.dir))

    dl.main()

    raw = tmp_path / "work" / paths.RAW_DIR
    assert listing(raw) == sorted(p.name for p in tiny_mnist_dir.paths.values())
    for role, path in tiny_mnist_dir.paths.items():
        assert hashlib.sha256((raw / path.name).read_bytes()).hexdigest() == tiny_mnist_dir.sha256[role]
    assert server.requests == []
