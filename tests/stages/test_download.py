"""Tests for ``stages/download.py`` against a real HTTP server on 127.0.0.1.

The server (``tests/helpers/http_faults.py``, as the ``fault_server`` fixture of
``tests/conftest.py``) runs in a thread on port 0 and is shut down after each test; every
request has short connect/read timeouts. Files are small synthetic blobs with their own sha256.
Fault injection (bad statuses, truncation, stalls, oversize bodies, redirects) lives in
``tests/reliability/test_download_faults.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from helpers.files import Blob, corrupt, http_sources, listing, make_blob
from helpers.http_faults import FaultyServer, ok, status
from mnist_pipeline import paths
from mnist_pipeline.data_config import DownloadConfig
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.stages import download as dl

pytestmark = pytest.mark.timeout(30)

CFG = DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=1, backoff=0.0, max_seconds=600.0)


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


def test_good_file_is_verified_and_renamed_in(fault_server, blob, tmp_path):
    fault_server.route(blob.route("m1"), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path) == "m1"

    assert_verified(tmp_path, blob)
    assert fault_server.requests == [blob.route("m1")]


def test_bad_checksum_on_first_source_falls_back_to_second(fault_server, blob, tmp_path):
    fault_server.route(blob.route("m1"), ok(corrupt(blob.data)))
    fault_server.route(blob.route("m2"), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path) == "m2"

    assert_verified(tmp_path, blob)
    assert fault_server.requests == [blob.route("m1"), blob.route("m2")]


def test_all_sources_bad_gives_one_line_listing_each_and_leaves_nothing(fault_server, blob, tmp_path):
    fault_server.route(blob.route("m1"), ok(corrupt(blob.data)))
    fault_server.route(blob.route("m2"), status(404))
    dest = tmp_path / "raw"

    with pytest.raises(DataError) as err:
        dl.download([blob.spec], http_sources(fault_server, "m1", "m2"), dest, CFG)

    message = str(err.value)
    assert "\n" not in message
    assert f"could not fetch {blob.spec.name} from any source" in message
    assert f"m1: checksum mismatch for {blob.spec.name}" in message
    assert "m2: HTTP 404 Not Found" in message
    assert f"set {dl.MIRROR_ENV} to a directory or http(s) URL" in message
    assert listing(dest) == []  # no final, partial or .part file


def test_present_and_verified_file_is_skipped_without_any_request(fault_server, blob, tmp_path):
    (tmp_path / blob.spec.name).write_bytes(blob.data)
    fault_server.route(blob.route("m1"), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path) == "already present"

    assert fault_server.requests == []
    assert_verified(tmp_path, blob)


def test_present_but_corrupt_file_is_fetched_again(fault_server, blob, tmp_path):
    (tmp_path / blob.spec.name).write_bytes(corrupt(blob.data))
    fault_server.route(blob.route("m1"), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path) == "m1"

    assert fault_server.count(blob.route("m1")) == 1
    assert_verified(tmp_path, blob)


def test_data_mirror_directory_is_tried_first_and_verified(fault_server, blob, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / blob.spec.name).write_bytes(blob.data)
    fault_server.route(blob.route("m1"), ok(blob.data))
    dest = tmp_path / "raw"
    dest.mkdir()

    srcs = dl.sources([fault_server.url("m1/")], str(mirror))

    assert fetch(fault_server, blob, dest, srcs) == f"{dl.MIRROR_ENV}={mirror}"
    assert fault_server.requests == []
    assert_verified(dest, blob)


def test_corrupt_file_in_data_mirror_directory_is_rejected_like_any_source(fault_server, blob, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / blob.spec.name).write_bytes(corrupt(blob.data))
    fault_server.route(blob.route("m1"), ok(blob.data))
    dest = tmp_path / "raw"
    dest.mkdir()

    srcs = dl.sources([fault_server.url("m1/")], str(mirror))
    assert fetch(fault_server, blob, dest, srcs) == fault_server.url("m1/")

    assert fault_server.count(blob.route("m1")) == 1
    assert_verified(dest, blob)


def test_data_mirror_url_goes_through_the_same_verification(fault_server, blob, tmp_path):
    fault_server.route(blob.route("env"), ok(corrupt(blob.data)))
    fault_server.route(blob.route("m1"), ok(blob.data))

    srcs = dl.sources([fault_server.url("m1/")], fault_server.url("env"))  # no trailing slash: added

    assert [s.base for s in srcs] == [fault_server.url("env/"), fault_server.url("m1/")]
    assert fetch(fault_server, blob, tmp_path, srcs) == fault_server.url("m1/")
    assert fault_server.requests == [blob.route("env"), blob.route("m1")]


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
    fault_server, blob, tmp_path, monkeypatch, params_dict, value, reason
):
    value = value.format(tmp=tmp_path)
    params_dict["dataset"]["mirrors"] = [fault_server.url("m1/")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(dl.MIRROR_ENV, value)

    with pytest.raises(ConfigError) as err:
        dl.main()

    assert str(err.value).startswith(f"{dl.MIRROR_ENV}={value}")
    assert reason in str(err.value)
    assert "\n" not in str(err.value)
    assert fault_server.requests == []
    assert not (tmp_path / "data").exists()


def test_main_fetches_every_dataset_file_from_data_mirror(
    fault_server, tmp_path, monkeypatch, params_dict, tiny_mnist_dir
):
    params_dict["dataset"]["mirrors"] = [fault_server.url("m1/")]
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
    assert fault_server.requests == []
