"""Builds on object storage: a real S3-compatible server (moto, tests/s3_server.py) stands in
for AWS S3, reached through the same `s3://` code path (pyarrow's S3 filesystem) a user's build
takes. Build, kill, resume, card and publish, all on `s3://`, and the resume decision made from
one listing, without reading a shard."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from procs import reap_session
from s3_server import S3Server

pytest.importorskip("moto")

REPO = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["--rows", "1600", "--shard-rows", "200", "--seq-len", "380"]  # 8 shards


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(s3):
    """A build's environment: the S3 server's AWS variables, a private Ray temp dir and token."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    e = {**s3.apply(), "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token",
         "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    e.pop("RAY_ADDRESS", None)
    yield e
    shutil.rmtree(tmp, ignore_errors=True)


def s3_files(s3, url: str) -> dict[str, int]:
    """{relative path: size} of every object under an s3:// prefix (listed through pyarrow)."""
    from pyarrow import fs

    os.environ.update(s3.env)
    fsys, base = fs.FileSystem.from_uri(url)
    infos = fsys.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    return {i.path[len(base) + 1:]: i.size for i in infos if i.type == fs.FileType.File}


def s3_bytes(s3, url: str) -> bytes:
    from pyarrow import fs

    os.environ.update(s3.env)
    fsys, path = fs.FileSystem.from_uri(url)
    with fsys.open_input_stream(path) as f:
        return f.read()




def test_ray_build_on_s3_killed_and_resumed_equals_a_local_build(s3, env, tmp_path):
    url = s3.make_bucket("nca-resume") + "/v1"
    cmd = [sys.executable, "-m", "ncagen.build", *ARGS, "--out", url]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while first.poll() is None and time.monotonic() < deadline:
            if any(p.endswith(".parquet") for p in s3_files(s3, url)):
                break
            time.sleep(0.1)
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        assert not reap_session(first.pid)
    before = {p: n for p, n in s3_files(s3, url).items() if p.endswith(".parquet")}
    assert 1 <= len(before) < 8, "the kill did not land part-way"
    assert not [p for p in s3_files(s3, url) if p.endswith(".tmp")]  # nothing half-written

    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, start_new_session=True)
    assert second.returncode == 0, second.stderr
    assert "[ncagen] 8/8 shards  1,600/1,600 rows" in second.stderr
    files = s3_files(s3, url)
    shards = sorted(p for p in files if p.startswith("data/") and p.endswith(".parquet"))
    assert len(shards) == 8 and "README.md" in files and "figures/band_50_100_zipf.png" in files
    assert "preview/train-00000-of-00001.parquet" in files  # the card's preview config
    assert ".ncagen.lock" not in files  # released
    manifest = json.loads(s3_bytes(s3, f"{url}/ncagen.json"))
    assert manifest["complete"] is True
    for rel in shards:
        data = s3_bytes(s3, f"{url}/{rel}")
        assert manifest["shards"][rel]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["shards"][rel]["bytes"] == len(data) == files[rel]

    from ncagen.build import main

    local = tmp_path / "local"
    assert main([*ARGS, "--out", str(local), "--executor", "local"]) == 0
    for rel in shards:  # object storage, a kill and a resume: the bytes of one local process
        assert (local / rel).read_bytes() == s3_bytes(s3, f"{url}/{rel}"), rel
    card = s3_bytes(s3, f"{url}/README.md").decode()
    assert "band_50_100" in card and "1,600" in card


def test_resume_decides_from_one_listing_without_reading_shards(s3, monkeypatch, tmp_path):
    from ncagen.build import main, resume
    from ncagen.config import Band, NCAConfig
    from ncagen.plan import BuildConfig, plan
    from ncagen.storage import Storage

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    url = s3.make_bucket("nca-listing") + "/ds"
    args = ["--rows", "300", "--shard-rows", "100", "--seq-len", "380", "--executor", "local"]
    assert main([*args, "--out", url]) == 0
    store = Storage(url)
    manifest = store.read_json("ncagen.json")
    tasks = plan(BuildConfig(out=url, bands=(Band(0.5, 1.0),), rows=300, shard_rows=100,
                             nca=NCAConfig(seq_len=380)))
    seen = len(s3.requests())
    done, todo = resume(store, tasks, manifest["shards"], sys.stderr)
    assert not todo and set(done) == {t.path for t in tasks}
    new = s3.requests()[seen:]
    assert new and all(r.startswith("GET /nca-listing?") or r.startswith("GET /nca-listing/?")
                       or r.startswith("HEAD") for r in new), new  # listings only
    assert not [r for r in new if ".parquet" in r]

    # an object replaced behind the build's back (same size, new bytes) is not trusted; S3
    # modification times have one-second resolution, so the replacement comes a second later
    time.sleep(1.1)
    rel = tasks[1].path
    data = bytearray(s3_bytes(s3, f"{url}/{rel}"))
    data[-20] ^= 0xFF
    with store.atomic_write(rel) as sink:
        sink.write(bytes(data))
    done, todo = resume(store, tasks, manifest["shards"], sys.stderr)
    assert [t.path for t in todo] == [rel]
    # and the same command rebuilds it to the recorded bytes
    assert main([*args, "--out", url]) == 0
    assert hashlib.sha256(s3_bytes(s3, f"{url}/{rel}")).hexdigest() == manifest["shards"][rel]["sha256"]


def test_unreachable_storage_is_one_line(tmp_path, env):
    env = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    res = subprocess.run([sys.executable, "-m", "ncagen.build", "--rows", "10", "--seq-len", "380",
                          "--executor", "local", "--out", "s3://nowhere/ds"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "storage unreachable" in res.stderr and "s3://nowhere/ds" in res.stderr
    assert "testing" not in res.stderr  # no credential in the message


def test_publish_a_build_on_s3(s3, hub, token, monkeypatch):
    """publish reads an s3:// build and sends it to the stand-in Hub (tests/hub_server.py)."""
    from ncagen.build import main
    from ncagen.publish import publish

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    url = s3.make_bucket("nca-publish") + "/ds"
    assert main(["--rows", "200", "--shard-rows", "100", "--seq-len", "380", "--executor", "local",
                 "--out", url]) == 0
    report = publish(url, "org/nca", token=token, endpoint=hub.url)
    files = hub.files("org/nca")
    shards = {p for p in s3_files(s3, url) if p.endswith(".parquet")}  # the preview too
    assert shards and shards <= set(files) and "README.md" in files
    assert report.commit is not None
    for rel in shards:
        assert files[rel] == s3_bytes(s3, f"{url}/{rel}")


def test_credentials_in_the_url_stay_out_of_output_and_files(s3, monkeypatch, capsys):
    """A build and its card on s3://KEY:SECRET@bucket/...: neither command prints the key or
    the secret, and no file the build or the card writes holds them (moto accepts any key)."""
    from ncagen.build import main as build
    from ncagen.card import main as card

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    plain = s3.make_bucket("nca-redact") + "/ds"
    url = plain.replace("s3://", "s3://AKIDURLKEY:UrlSecret789@", 1)
    assert build(["--rows", "200", "--shard-rows", "100", "--seq-len", "380",
                  "--executor", "local", "--out", url]) == 0
    assert card([url, "--no-figures"]) == 0
    out, err = capsys.readouterr()
    redacted = plain.replace("s3://", "s3://***@", 1)
    assert out.splitlines()[-1] == f"{redacted}/README.md"  # the card says where it wrote
    files = s3_files(s3, plain)
    assert {"README.md", "ncagen.json"} <= set(files) and any(p.endswith(".parquet") for p in files)
    for secret in ("UrlSecret789", "AKIDURLKEY"):
        assert secret not in out and secret not in err
        for rel in files:
            assert secret.encode() not in s3_bytes(s3, f"{plain}/{rel}"), rel
    assert redacted in json.loads(s3_bytes(s3, f"{plain}/ncagen.json"))["command"]
