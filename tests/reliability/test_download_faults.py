"""Download under faults: a misbehaving 127.0.0.1 server, one fault per test.

Each test proves one behaviour of ``stages/download.py``: error statuses fall
through to the next mirror, transient ones are retried with backoff, broken or
hostile bodies are refused without leaving a byte in the destination, stalls
hit the read timeout, slow drips hit ``download.max_seconds``, redirects are
restricted, and a killed run recovers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.files import corrupt, http_sources, listing
from helpers.http_faults import drip, endless, ok, redirect, stall, status, truncated
from mnist_pipeline import config
from mnist_pipeline.data_config import DownloadConfig
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.stages import download as dl

pytestmark = pytest.mark.timeout(30)


def fetch(server, blob, dest: Path, cfg: DownloadConfig, mirrors=("m1", "m2"), sleeps=None) -> str:
    """Run ``download.fetch`` for ``blob`` over ``mirrors`` on ``server``, recording backoff sleeps."""
    record = sleeps.append if sleeps is not None else (lambda seconds: None)
    with dl.new_session() as session:
        return dl.fetch(blob.spec, http_sources(server, *mirrors), dest, cfg, session, sleep=record)


def assert_verified(dest: Path, blob) -> None:
    """``dest`` holds exactly the blob, verified, and nothing else (no temp or ``.part`` file)."""
    assert listing(dest) == [blob.spec.name]
    assert hashlib.sha256((dest / blob.spec.name).read_bytes()).hexdigest() == blob.spec.sha256


# --- error statuses and retries ---------------------------------------------------------------


@pytest.mark.parametrize(("code", "transient"), [(404, False), (500, True)])
def test_error_status_on_first_mirror_falls_through_to_next(fault_server, blob, fast_cfg, tmp_path, code, transient):
    fault_server.route(blob.route("m1"), status(code))
    fault_server.route(blob.route("m2"), ok(blob.data))
    sleeps: list[float] = []

    assert fetch(fault_server, blob, tmp_path, fast_cfg, sleeps=sleeps) == "m2"

    assert_verified(tmp_path, blob)
    # 404 is final for that mirror; 500 is retried (retries + 1 attempts) before moving on.
    assert fault_server.count(blob.route("m1")) == (fast_cfg.retries + 1 if transient else 1)
    assert len(sleeps) == (fast_cfg.retries if transient else 0)
    assert fault_server.count(blob.route("m2")) == 1


def test_connection_refused_is_retried_then_next_mirror(fault_server, blob, fast_cfg, tmp_path):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/m0/"
    fault_server.route(blob.route("m1"), ok(blob.data))
    srcs = [dl.Source("m0", dead, local=False), *http_sources(fault_server, "m1")]
    sleeps: list[float] = []

    with dl.new_session() as session:
        assert dl.fetch(blob.spec, srcs, tmp_path, fast_cfg, session, sleep=sleeps.append) == "m1"
        (tmp_path / blob.spec.name).unlink()
        with pytest.raises(DataError, match=r"m0: cannot connect: Failed to establish a new connection: .*refused"):
            dl.fetch(blob.spec, srcs[:1], tmp_path, fast_cfg, session, sleep=sleeps.append)

    assert len(sleeps) == 2 * fast_cfg.retries  # refused is transient: retried on both calls


def test_transient_503_then_200_succeeds_with_backoff_honoured(fault_server, blob, tmp_path):
    cfg = DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=3, backoff=0.05, max_seconds=600.0)
    fault_server.route(blob.route("m1"), status(503), status(503), ok(blob.data))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    start = time.monotonic()
    with dl.new_session() as session:
        origin = dl.fetch(blob.spec, http_sources(fault_server, "m1", "m2"), tmp_path, cfg, session, sleep=sleep)
    elapsed = time.monotonic() - start

    assert origin == "m1"
    assert_verified(tmp_path, blob)
    assert sleeps == [0.05, 0.1]  # backoff * 2**attempt, once per failed attempt
    assert fault_server.count(blob.route("m1")) == 3
    assert fault_server.count(blob.route("m2")) == 0
    assert sum(sleeps) <= elapsed < 10  # the waits really happened, and the whole thing is bounded


def test_persistent_503_exhausts_retries_with_capped_backoff(fault_server, blob, tmp_path):
    cfg = DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=4, backoff=50.0, max_seconds=600.0)
    fault_server.route(blob.route("m1"), status(503))
    sleeps: list[float] = []

    with pytest.raises(DataError, match="m1: HTTP 503"):
        fetch(fault_server, blob, tmp_path, cfg, mirrors=("m1",), sleeps=sleeps)

    assert fault_server.count(blob.route("m1")) == cfg.retries + 1
    assert sleeps == [50.0, dl.MAX_BACKOFF, dl.MAX_BACKOFF, dl.MAX_BACKOFF]  # 100, 200, 400 capped at 60
    assert listing(tmp_path) == []


# --- broken and hostile bodies ----------------------------------------------------------------


def test_truncated_body_is_retried_then_next_mirror_no_partial_file(fault_server, blob, fast_cfg, tmp_path):
    # Content-Length says 100000, the server sends 1000 bytes and closes the connection.
    fault_server.route(blob.route("m1"), truncated(blob.data, 1000))
    fault_server.route(blob.route("m2"), truncated(blob.data, 1000), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path, fast_cfg) == "m2"

    assert_verified(tmp_path, blob)
    assert fault_server.count(blob.route("m1")) == fast_cfg.retries + 1  # truncation is transient
    assert fault_server.count(blob.route("m2")) == 2  # truncated once, then retried successfully


def test_truncated_everywhere_fails_clearly_and_leaves_nothing(fault_server, blob, fast_cfg, tmp_path):
    fault_server.route(blob.route("m1"), truncated(blob.data, 1000))

    with pytest.raises(DataError) as err:
        fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",))

    assert f"truncated body: connection closed after 1000 of {blob.spec.size} bytes" in str(err.value)
    assert listing(tmp_path) == []


def test_wrong_bytes_name_file_and_both_sha256_and_never_reach_dest(fault_server, blob, fast_cfg, tmp_path):
    bad = corrupt(blob.data)
    fault_server.route(blob.route("m1"), ok(bad))
    fault_server.route(blob.route("m2"), status(404))

    with pytest.raises(DataError) as err:
        fetch(fault_server, blob, tmp_path, fast_cfg)

    message = str(err.value)
    assert f"checksum mismatch for {blob.spec.name}" in message
    assert f"expected sha256 {blob.spec.sha256}" in message
    assert f"got {hashlib.sha256(bad).hexdigest()}" in message
    assert "m2: HTTP 404" in message  # the next mirror was tried
    assert fault_server.count(blob.route("m1")) == 1  # a checksum mismatch is not retried
    assert listing(tmp_path) == []


def test_wrong_bytes_then_good_mirror_only_verified_bytes_are_renamed_in(
    fault_server, blob, fast_cfg, tmp_path, monkeypatch
):
    fault_server.route(blob.route("m1"), ok(corrupt(blob.data)))
    fault_server.route(blob.route("m2"), ok(blob.data))
    renamed: list[str] = []
    real_replace = os.replace

    def spy_replace(src, dst):  # record the sha256 of whatever is about to become the destination
        renamed.append(hashlib.sha256(Path(src).read_bytes()).hexdigest())
        real_replace(src, dst)

    monkeypatch.setattr(dl.os, "replace", spy_replace)

    assert fetch(fault_server, blob, tmp_path, fast_cfg) == "m2"

    assert renamed == [blob.spec.sha256]
    assert_verified(tmp_path, blob)


@pytest.mark.parametrize("keep", [0, 1000], ids=["no-body", "part-body"])
def test_stalled_server_hits_read_timeout_within_configured_seconds(fault_server, blob, tmp_path, keep):
    # The server sends headers (and maybe some bytes), then nothing for STALL_LIMIT = 20 s.
    cfg = DownloadConfig(connect_timeout=2.0, read_timeout=0.5, retries=1, backoff=0.0, max_seconds=600.0)
    fault_server.route(blob.route("m1"), stall(blob.data, keep))

    start = time.monotonic()
    with pytest.raises(DataError) as err:
        fetch(fault_server, blob, tmp_path, cfg, mirrors=("m1",))
    elapsed = time.monotonic() - start

    assert f"read timed out after 0.5s ({keep} bytes received)" in str(err.value)
    assert fault_server.count(blob.route("m1")) == cfg.retries + 1
    assert elapsed < 5  # two attempts of ~0.5 s each, far below the 20 s stall
    assert listing(tmp_path) == []


def test_slow_drip_is_cut_off_by_max_seconds_then_next_mirror(fault_server, blob, tmp_path):
    # A byte every 0.1 s: every read gets data far inside the 2 s read timeout, so without a total
    # limit the 100 kB file would take ~3 hours. max_seconds gives up on the source after 1 s.
    cfg = DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=2, backoff=0.0, max_seconds=1.0)
    fault_server.route(blob.route("m1"), drip(blob.data, interval=0.1))
    fault_server.route(blob.route("m2"), ok(blob.data))

    start = time.monotonic()
    with pytest.raises(DataError) as err:
        fetch(fault_server, blob, tmp_path, cfg, mirrors=("m1",))
    elapsed = time.monotonic() - start

    message = str(err.value)
    found = re.search(rf"m1: gave up after max_seconds=1.0s \((\d+) of {blob.spec.size} bytes received\)", message)
    assert found, message
    assert int(found.group(1)) >= 3 and "read timed out" not in message  # bytes kept coming: no read timeout
    assert fault_server.count(blob.route("m1")) == 1  # too slow is final for that source: not retried
    (sent,) = fault_server.sent(blob.route("m1"))
    assert sent < 100  # the server stopped dripping soon after the client hung up
    assert elapsed < 5  # ~1 s plus one drip interval, not hours
    assert listing(tmp_path) == []

    assert fetch(fault_server, blob, tmp_path, cfg) == "m2"  # the next mirror is used
    assert_verified(tmp_path, blob)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_max_seconds_must_be_positive(params_dict, value):
    params_dict["download"]["max_seconds"] = value

    with pytest.raises(ConfigError, match=rf"^download\.max_seconds={value} is invalid: must be > 0 seconds$"):
        config.from_dict(params_dict)


def test_oversized_body_is_aborted_at_the_cap(fault_server, blob, fast_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "SIZE_MARGIN", 4096)
    fault_server.route(blob.route("m1"), endless())  # no Content-Length, zeros until the client hangs up

    with pytest.raises(DataError, match=rf"body exceeds expected {blob.spec.size} bytes \(\+4096 margin\); aborted"):
        fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",))

    assert fault_server.count(blob.route("m1")) == 1  # not retried: a hostile mirror gets one chance
    (sent,) = fault_server.sent(blob.route("m1"))
    assert sent < 32 << 20  # the client stopped reading early (the server would send 256 MiB)
    assert listing(tmp_path) == []


def test_oversized_content_length_is_refused_before_reading(fault_server, blob, fast_cfg, tmp_path):
    fault_server.route(blob.route("m1"), endless(announce=1 << 40))
    fault_server.route(blob.route("m2"), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path, fast_cfg) == "m2"
    assert_verified(tmp_path, blob)

    (tmp_path / blob.spec.name).unlink()
    with pytest.raises(DataError, match=rf"m1: announces {1 << 40} bytes, more than the \d+ allowed; not downloaded"):
        fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",))
    assert fault_server.count(blob.route("m1")) == 2  # once per fetch: not retried
    assert listing(tmp_path) == []


def test_oversized_local_file_is_refused(fault_server, blob, fast_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "SIZE_MARGIN", 10)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / blob.spec.name).write_bytes(blob.data + b"\0" * 11)
    dest = tmp_path / "raw"
    dest.mkdir()

    with dl.new_session() as session, pytest.raises(DataError, match="more than the .* allowed; not copied"):
        dl.fetch(blob.spec, [dl.mirror_from_env(str(mirror))], dest, fast_cfg, session)
    assert listing(dest) == []


# --- redirects --------------------------------------------------------------------------------


def test_plain_redirect_is_followed(fault_server, blob, fast_cfg, tmp_path):
    fault_server.route(blob.route("m1"), redirect(f"/elsewhere/{blob.spec.name}"))
    fault_server.route(f"/elsewhere/{blob.spec.name}", ok(blob.data))

    assert fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",)) == "m1"
    assert_verified(tmp_path, blob)


def test_redirect_loop_is_refused(fault_server, blob, fast_cfg, tmp_path):
    fault_server.route(blob.route("m1"), redirect("/a"))
    fault_server.route("/a", redirect("/b"))
    fault_server.route("/b", redirect(blob.route("m1")))
    fault_server.route(blob.route("m2"), ok(blob.data))

    assert fetch(fault_server, blob, tmp_path, fast_cfg) == "m2"
    assert fault_server.count(blob.route("m1")) == 1  # a loop is not retried
    (tmp_path / blob.spec.name).unlink()
    with pytest.raises(DataError, match="m1: refused redirect loop back to http://127.0.0.1:[0-9]+/m1/"):
        fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",))


def test_endless_redirect_chain_is_refused(fault_server, blob, fast_cfg, tmp_path):
    for hop in range(20):
        fault_server.route(f"/hop{hop}", redirect(f"/hop{hop + 1}"))
    fault_server.route(blob.route("m1"), redirect("/hop0"))

    with pytest.raises(DataError, match=rf"m1: too many redirects \(> {dl.MAX_REDIRECTS}\)"):
        fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",))
    assert len(fault_server.requests) == dl.MAX_REDIRECTS + 1
    assert listing(tmp_path) == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/blob.gz", "gopher://127.0.0.1/x"])
def test_redirect_to_non_http_scheme_is_refused(fault_server, blob, fast_cfg, tmp_path, target):
    fault_server.route(blob.route("m1"), redirect(target))

    with pytest.raises(DataError, match=f"m1: refused redirect to '{target}': only http\\(s\\) is allowed"):
        fetch(fault_server, blob, tmp_path, fast_cfg, mirrors=("m1",))
    assert fault_server.count(blob.route("m1")) == 1
    assert listing(tmp_path) == []


# --- interrupted downloads --------------------------------------------------------------------


def test_leftover_part_file_is_discarded_and_the_run_ends_verified(fault_server, blob, fast_cfg, tmp_path):
    part = dl.part_path(tmp_path / blob.spec.name)
    part.write_bytes(b"half of an old download")
    fault_server.route(blob.route("m1"), ok(blob.data))

    origins = dl.download([blob.spec], http_sources(fault_server, "m1"), tmp_path, fast_cfg)

    assert origins == {blob.spec.name: "m1"}
    assert_verified(tmp_path, blob)


def test_leftover_part_files_go_even_when_nothing_is_downloaded(fault_server, blob, fast_cfg, tmp_path):
    # The file itself is already verified (so it is skipped), and a killed run left two .part files,
    # one for a file no longer in the config: data/raw must end up holding only verified files.
    (tmp_path / blob.spec.name).write_bytes(blob.data)
    dl.part_path(tmp_path / blob.spec.name).write_bytes(b"stale")
    dl.part_path(tmp_path / "renamed-since.gz").write_bytes(b"stale")

    origins = dl.download([blob.spec], http_sources(fault_server, "m1"), tmp_path, fast_cfg)

    assert origins == {blob.spec.name: "already present"}
    assert fault_server.requests == []
    assert_verified(tmp_path, blob)


CHILD = """
import json, sys
from pathlib import Path
from mnist_pipeline.data_config import DownloadConfig, FileSpec
from mnist_pipeline.stages import download as dl
spec, url, dest = json.loads(sys.argv[1])
cfg = DownloadConfig(connect_timeout=2.0, read_timeout=30.0, retries=0, backoff=0.0, max_seconds=600.0)
dl.download([FileSpec(**spec)], [dl.Source("m1", url, local=False)], Path(dest), cfg)
"""


def test_download_killed_mid_file_recovers_on_next_run(fault_server, blob, fast_cfg, tmp_path):
    fault_server.route(blob.route("m1"), stall(blob.data, keep=blob.spec.size // 2), ok(blob.data))
    part = dl.part_path(tmp_path / blob.spec.name)
    args = json.dumps([blob.spec.__dict__, fault_server.url("m1/"), str(tmp_path)])
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size > 0):  # half the file is on disk
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.stderr.close()
    assert listing(tmp_path) == [part.name]  # the kill left a partial download, not a final file

    origins = dl.download([blob.spec], http_sources(fault_server, "m1"), tmp_path, fast_cfg)

    assert origins == {blob.spec.name: "m1"}
    assert_verified(tmp_path, blob)
