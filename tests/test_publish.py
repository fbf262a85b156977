"""Publishing a build to the Hub: the real huggingface_hub client against hub_server.py.

`HubServer` stands in for the real Hugging Face Hub: it answers the Hub's own HTTP API (tree
listings, preupload, the LFS batch API, the NDJSON commit endpoint), so what these tests see the
client send is what the real Hub would receive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub_server import HubServer
from ncagen import publish as publish_module
from ncagen.publish import PublishError, load_build, main, publish
from ncagen.shards import MANIFEST

# huggingface_hub's LFS PUT passes a file as `data=`, which its HTTP client flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "ncagen-org/nca-test"
SHARDS = "data/band_50_100"
SMALL = f"{SHARDS}/train-00000-of-00002.parquet"
BIG = f"{SHARDS}/train-00001-of-00002.parquet"
FIGURE = "figures/ratios.png"
EXPECTED = {"README.md", MANIFEST, SMALL, BIG, FIGURE}
REFUSAL_FIX = "rerun its build command to finish it"


def write_manifest(root: Path, *, complete: bool = True) -> None:
    """Write the manifest the way a build leaves it: every shard under data/ with its checksum."""
    shards = {}
    for path in sorted((root / "data").rglob("*.parquet")):
        content = path.read_bytes()
        shards[path.relative_to(root).as_posix()] = {
            "rows": pq.read_metadata(path).num_rows,
            "tokens": 0,
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
        }
    manifest = {"format": 1, "complete": complete, "shards": shards}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))


def write_shard(root: Path, rel: str, rows: int, seed: int = 0) -> None:
    """A small Parquet shard at root/rel."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {"seed": pa.array(np.arange(rows, dtype=np.int64)), "ratio": pa.array(rng.random(rows))}
    )
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / rel)


def write_build(root: Path) -> Path:
    """A hand-made complete build: card, manifest, two shards (one over 10 MB), a figure, junk."""
    rng = np.random.default_rng(0)
    (root / SHARDS).mkdir(parents=True)
    (root / "README.md").write_text("---\nlicense: mit\n---\n# NCA test set\n")
    write_shard(root, SMALL, rows=8)
    rows = [rng.bytes(1 << 20) for _ in range(11)]  # incompressible, so the file stays over 10 MB
    pq.write_table(
        pa.table({"tokens": pa.array(rows, pa.binary())}), root / BIG, compression="none"
    )
    (root / "figures").mkdir()
    (root / FIGURE).write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(2000))
    (root / SHARDS / "train-00002-of-00002.parquet.1f2e3d4c.tmp").write_bytes(b"half a shard")
    (root / ".cache").mkdir()
    (root / ".cache" / "state.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\0")
    write_manifest(root)
    assert (root / BIG).stat().st_size > 10 * 1024 * 1024
    return root


def local_bytes(root: Path, paths=EXPECTED) -> dict[str, bytes]:
    """Content of files of the build, by repo path."""
    return {p: (root / p).read_bytes() for p in paths}


def commit_requests(hub: HubServer) -> list[tuple[dict, list[dict]]]:
    """(header, operations) of every commit request the server received."""
    out = []
    for request in hub.requests_to("POST", "/commit/"):
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        out.append((header, [line for line in lines if line["key"] != "header"]))
    return out


def commit_ops(hub: HubServer) -> list[list[dict]]:
    """The operations of every commit request the server received, one list per request."""
    return [ops for _, ops in commit_requests(hub)]


def data_files(files) -> set[str]:
    return {p for p in files if p.startswith("data/")}


@pytest.fixture
def build(tmp_path) -> Path:
    return write_build(tmp_path / "build")


def flip_a_byte(path: Path) -> None:
    """Alter a file in place: same size, other bytes."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


@pytest.fixture
def object_store(build, monkeypatch):
    """The build read the way an object store is (pyarrow over an fsspec filesystem: listed
    mtimes, staged copies), from the local folder, and a way to record the listed mtimes in its
    manifest the way a build on an object store does."""
    import fsspec
    from pyarrow import fs

    store = fs.PyFileSystem(fs.FSSpecHandler(fsspec.filesystem("file")))
    monkeypatch.setattr(publish_module, "filesystem", lambda root: (store, str(root)))

    def record_mtimes() -> None:
        manifest = json.loads((build / MANIFEST).read_text())
        for rel, record in manifest["shards"].items():
            record["mtime_ns"] = store.get_file_info(str(build / rel)).mtime_ns
        (build / MANIFEST).write_text(json.dumps(manifest))

    assert not load_build(build).is_local
    return record_mtimes


@pytest.fixture
def memory_url(build):
    """The build copied into fsspec's in-process memory filesystem, as a memory:// URL."""
    import fsspec

    memory = fsspec.filesystem("memory")
    path = f"/ncagen-test-{secrets.token_hex(6)}"
    memory.put(str(build), path, recursive=True)
    yield f"memory:/{path}"
    memory.rm(path, recursive=True)


def test_build_files_skip_hidden_and_temporary_and_carry_manifest_sha256(build):
    files = load_build(build).files

    assert {f.path for f in files} == EXPECTED
    assert [f.path for f in files][-2:] == ["README.md", MANIFEST]  # the card goes last
    assert all(f.size == (build / f.path).stat().st_size for f in files)
    recorded = json.loads((build / MANIFEST).read_text())["shards"]
    assert {f.path: f.sha256 for f in files if f.sha256} == {
        p: e["sha256"] for p, e in recorded.items()
    }


def test_publish_uploads_every_file_byte_identical(hub, build, tmp_path):
    report = publish(build, REPO, endpoint=hub.url)

    assert not report.dry_run and report.revision == "main"
    assert {f.path for f in report.uploaded} == EXPECTED
    assert report.uploaded_bytes == sum(len(b) for b in local_bytes(build).values())
    assert report.unchanged == () and report.deleted == () and report.commit is not None
    assert report.url == f"{hub.url}/datasets/{REPO}"
    remote = hub.files(REPO)
    assert set(remote) == EXPECTED | {".gitattributes"}
    assert {p: remote[p] for p in EXPECTED} == local_bytes(build)
    big_oid = hub.repo(REPO).commits[report.commit][BIG].sha256
    assert big_oid in hub.lfs_puts  # the large shard went through the LFS batch API + PUT
    assert all(
        r.headers.get("authorization") is None for r in hub.requests_to("PUT", "/_lfs_storage/")
    )

    from huggingface_hub import hf_hub_download

    got = hf_hub_download(
        REPO, BIG, repo_type="dataset", endpoint=hub.url, local_dir=tmp_path / "dl"
    )
    assert Path(got).read_bytes() == (build / BIG).read_bytes()


def test_second_publish_uploads_nothing(hub, build):
    publish(build, REPO, endpoint=hub.url)
    commits, puts, requests = hub.commit_count(REPO), len(hub.lfs_puts), len(hub.requests)

    report = publish(build, REPO, endpoint=hub.url)

    assert report.uploaded == () and report.commit is None
    assert set(report.unchanged) == EXPECTED and report.deleted == ()
    assert hub.commit_count(REPO) == commits and len(hub.lfs_puts) == puts
    new = hub.requests[requests:]
    assert not any("/commit/" in r.path or "/preupload/" in r.path or "lfs" in r.path for r in new)


def test_changing_one_shard_uploads_just_it_and_the_manifest(hub, build):
    publish(build, REPO, endpoint=hub.url)
    commits, puts = hub.commit_count(REPO), len(hub.lfs_puts)
    write_shard(build, SMALL, rows=9, seed=1)
    write_manifest(build)

    report = publish(build, REPO, endpoint=hub.url)

    assert [f.path for f in report.uploaded] == [SMALL, MANIFEST]
    assert set(report.unchanged) == EXPECTED - {SMALL, MANIFEST}
    assert hub.commit_count(REPO) == commits + 1
    assert [[op["value"]["path"] for op in ops] for ops in commit_ops(hub)][-1] == [SMALL, MANIFEST]
    assert len(hub.lfs_puts) == puts + 1  # only the changed shard's bytes went through LFS
    assert hub.files(REPO)[SMALL] == (build / SMALL).read_bytes()


def test_interrupted_publish_resumes_without_resending(hub, build):
    hub.fail_commits = 1
    with pytest.raises(PublishError, match="HTTP 500"):
        publish(build, REPO, endpoint=hub.url)
    assert hub.commit_count(REPO) == 1  # only the repo's initial commit
    puts = len(hub.lfs_puts)
    assert puts == 3  # the LFS objects did arrive before the commit failed

    report = publish(build, REPO, endpoint=hub.url)

    assert {f.path for f in report.uploaded} == EXPECTED
    assert len(hub.lfs_puts) == puts  # the LFS batch API said they are already stored
    assert {p: hub.files(REPO)[p] for p in EXPECTED} == local_bytes(build)


def test_content_is_preuploaded_in_batches_then_committed_once(hub, build):
    report = publish(build, REPO, endpoint=hub.url, files_per_batch=2)

    assert len(hub.requests_to("POST", "/preupload/")) == 3  # 5 files, 2 a batch
    assert hub.commit_count(REPO) == 2 and len(commit_ops(hub)) == 1
    paths = [op["value"]["path"] for op in commit_ops(hub)[0]]
    assert paths == [f.path for f in report.uploaded]
    assert paths[-2:] == ["README.md", MANIFEST]  # data first, the card last


def test_revision_creates_branch_and_leaves_main(hub, build):
    report = publish(build, REPO, endpoint=hub.url, revision="v1-draft")

    assert report.url == f"{hub.url}/datasets/{REPO}/tree/v1-draft"
    assert set(hub.files(REPO, revision="v1-draft")) == EXPECTED | {".gitattributes"}
    assert set(hub.files(REPO, revision="main")) == {".gitattributes"}
    assert publish(build, REPO, endpoint=hub.url, revision="v1-draft").uploaded == ()


def test_rebuild_with_other_shards_replaces_them_in_one_commit(hub, build, capsys):
    """Old and new shards never sit side by side on the branch, and data is never missing."""
    first = publish(build, REPO, endpoint=hub.url)
    old_head = hub.repo(REPO).branches["main"]
    assert old_head == first.commit
    (build / SMALL).unlink()
    (build / BIG).unlink()
    merged = f"{SHARDS}/train-00000-of-00001.parquet"
    write_shard(build, merged, rows=20, seed=2)
    write_manifest(build)
    requests = len(hub.requests)

    assert main([str(build), "--repo", REPO]) == 0

    assert set(hub.files(REPO)) == {"README.md", MANIFEST, merged, FIGURE, ".gitattributes"}
    assert hub.files(REPO)[merged] == (build / merged).read_bytes()
    history = hub.repo(REPO).history("main")
    assert history[1] == old_head and len(history) == 3  # exactly one commit on top
    snapshots = [data_files(hub.repo(REPO).commits[oid]) for oid in history]
    assert snapshots == [{merged}, {SMALL, BIG}, set()]
    [(header, ops)] = commit_requests(hub)[1:]
    assert header["parentCommit"] == old_head  # planned against, and committed on, that head
    assert sorted((op["key"], op["value"]["path"]) for op in ops) == sorted(
        [("lfsFile", merged), ("file", MANIFEST), ("deletedFile", SMALL), ("deletedFile", BIG)]
    )
    assert not any("/commit/" in r.path for r in hub.requests[requests:-1])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("uploaded 2 files") and "deleted 2 stale files in one commit" in out[0]
    assert out[1:3] == [f"  deleted {SMALL}", f"  deleted {BIG}"]
    assert out[-1] == f"{hub.url}/datasets/{REPO}"


def test_only_dataset_files_are_deleted_from_the_hub(hub, build):
    from huggingface_hub import HfApi

    publish(build, REPO, endpoint=hub.url)
    api = HfApi(endpoint=hub.url)
    for path in ("notes.md", ".github/workflow.yml", "upload.partial"):
        api.upload_file(path_or_fileobj=b"x", path_in_repo=path, repo_id=REPO, repo_type="dataset")
    (build / FIGURE).unlink()

    report = publish(build, REPO, endpoint=hub.url)

    assert report.deleted == (FIGURE, "notes.md") and report.uploaded == ()
    kept = {".gitattributes", ".github/workflow.yml", "upload.partial"}  # not dataset files
    assert set(hub.files(REPO)) == (EXPECTED - {FIGURE}) | kept


def test_token_travels_only_in_authorization_header(hub, build, token, capsys, caplog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_DEBUG", True)  # the client's most talkative logging
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")

    assert main([str(build), "--repo", REPO]) == 0
    write_shard(build, SMALL, rows=3, seed=3)
    write_manifest(build)
    assert main([str(build), "--repo", REPO, "--revision", "dev"]) == 0

    secret = token.encode()
    assert len(hub.requests) > 10
    for request in hub.requests:
        assert secret not in request.path.encode() and secret not in request.body
        for name, value in request.headers.items():
            if name == "authorization":
                assert value == f"Bearer {token}"
            else:
                assert token not in value, name
    encoded = (base64.b64encode(secret).decode(), token[3:])
    assert not any(e in r.body.decode("latin-1") for r in hub.requests for e in encoded)
    out, err = capsys.readouterr()
    assert token not in out and token not in err and token not in caplog.text
    assert all(token not in r.getMessage() for r in caplog.records)
    assert "uploaded 5 files" in out and f"{hub.url}/datasets/{REPO}" in out


def test_dry_run_lists_files_and_contacts_nothing(hub, build, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")

    assert main([str(build), "--repo", REPO, "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert hub.requests == []
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == EXPECTED
    assert "5 files" in out and ".tmp" not in out and ".cache" not in out


def test_a_manifest_nested_too_deep_is_one_line(hub, build, capsys):
    (build / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)  # json's recursion limit
    assert main([str(build), "--repo", REPO, "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and hub.requests == [] and len(err.splitlines()) == 1, err
    assert "nested too deep" in err


@pytest.mark.parametrize(
    "case",
    [
        "not complete",
        "no complete flag",
        "missing shard",
        "extra shard",
        "resized shard",
        "no shard list",
        "shard without sha256",
        "not complete, dry run",
    ],
)
def test_unfinished_build_is_refused_before_contacting_the_hub(case, hub, build, capsys):
    manifest = json.loads((build / MANIFEST).read_text())
    args = [str(build), "--repo", REPO]
    if case.startswith("not complete"):
        manifest["complete"] = False
    elif case == "no complete flag":
        del manifest["complete"]
    elif case == "missing shard":
        (build / BIG).unlink()
    elif case == "extra shard":
        write_shard(build, f"{SHARDS}/train-00002-of-00002.parquet", rows=4)
    elif case == "resized shard":
        with open(build / SMALL, "ab") as fh:
            fh.write(b"\0")
    elif case == "no shard list":
        del manifest["shards"]
    elif case == "shard without sha256":
        del manifest["shards"][BIG]["sha256"]
    if case.endswith("dry run"):
        args.append("--dry-run")
    (build / MANIFEST).write_text(json.dumps(manifest))

    assert main(args) == 2

    out, err = capsys.readouterr()
    assert out == "" and hub.requests == []
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert REFUSAL_FIX in err
    expected = {
        "not complete": "is not complete (ncagen.json says complete: false)",
        "no complete flag": "is not complete (ncagen.json says complete: null)",
        "missing shard": f"do not match its manifest (missing: {BIG})",
        "extra shard": f"not in the manifest: {SHARDS}/train-00002-of-00002.parquet",
        "resized shard": f"size differs: {SMALL} is",
        "no shard list": f"{MANIFEST} in {build} holds no shard list",
        "shard without sha256": f"do not match its manifest (no SHA-256 recorded: {BIG})",
        "not complete, dry run": "is not complete",
    }[case]
    assert expected in err


@pytest.mark.parametrize("dry_run", [False, True])
def test_shard_whose_content_differs_from_the_manifest_is_refused_before_contacting_the_hub(
    dry_run, hub, build, capsys
):
    flip_a_byte(build / SMALL)

    assert main([str(build), "--repo", REPO, *(["--dry-run"] if dry_run else [])]) == 2

    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert f"{SMALL} in {build} does not hold what {MANIFEST} records" in err
    assert REFUSAL_FIX in err
    assert hub.requests == [] and hub.repos == {}  # no repo created, nothing sent


def test_each_local_shard_is_hashed_once(hub, build, monkeypatch):
    """The check before the Hub reads every shard once; the upload reuses that SHA-256."""
    from huggingface_hub import lfs

    hashed = []
    digest, sha_fileobj = publish_module._digest, lfs.sha_fileobj
    monkeypatch.setattr(
        publish_module, "_digest", lambda b, f, d: hashed.append(f.path) or digest(b, f, d)
    )

    def spy_sha_fileobj(fileobj, *args, **kwargs):
        hashed.append(Path(fileobj.name).relative_to(build).as_posix())
        return sha_fileobj(fileobj, *args, **kwargs)

    monkeypatch.setattr(lfs, "sha_fileobj", spy_sha_fileobj)

    publish(build, REPO, endpoint=hub.url)

    assert sorted(p for p in hashed if p.startswith("data/")) == [SMALL, BIG]
    assert hub.files(REPO)[BIG] == (build / BIG).read_bytes()


def test_object_store_shard_that_differs_is_refused_before_contacting_the_hub(
    hub, build, object_store, capsys
):
    object_store()
    flip_a_byte(build / SMALL)  # a rewritten object: its mtime is no longer the recorded one

    assert main([str(build), "--repo", REPO]) == 2

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{SMALL} in {build} does not hold what" in err
    assert hub.requests == [] and hub.repos == {}


def test_object_store_shards_listed_as_recorded_are_trusted_and_checked_when_staged(
    hub, build, object_store, monkeypatch, capsys
):
    """An object listed with its recorded size and mtime is not read before the Hub; its
    staged copy is hashed as it is written, and one that differs is never sent."""
    object_store()
    hashed = []
    digest = publish_module._digest
    monkeypatch.setattr(
        publish_module, "_digest", lambda b, f, d: hashed.append(f.path) or digest(b, f, d)
    )
    flip_a_byte(build / SMALL)
    object_store()  # listed as recorded, yet other bytes

    assert main([str(build), "--repo", REPO]) == 2

    assert hub.lfs_puts == [] and commit_ops(hub) == []  # its bytes never reached the Hub
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{SMALL} in {build} does not hold what" in err
    assert "staged" in err and not data_files(hashed)


@pytest.mark.parametrize(
    "case",
    ["missing dir", "a file", "not a build", "bad repo id", "missing token", "rejected token",
     "bad timeout", "bad endpoint", "broken endpoint"],
)
def test_cli_errors_are_one_line_with_status_2(
    case, hub, build, token, tmp_path, capsys, monkeypatch
):
    target, repo, other_token = build, REPO, "hf_" + secrets.token_urlsafe(24)
    if case == "missing dir":
        target = tmp_path / "nowhere"
    elif case == "a file":
        target = build / MANIFEST
    elif case == "bad timeout":
        monkeypatch.setenv("NCAGEN_HUB_TIMEOUT", "soon")
    elif case == "bad endpoint":  # it was "could not reach the Hub", exit 1, after reading the build
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", "huggingface.co")
    elif case == "broken endpoint":  # huggingface_hub's import fails on it: "Invalid IPv6 URL"
        monkeypatch.setenv("HF_ENDPOINT", "http://[::1")
    elif case == "not a build":
        (build / MANIFEST).unlink()
    elif case == "bad repo id":
        repo = "not a/repo--id"
    elif case == "missing token":
        monkeypatch.delenv("HF_TOKEN")
    elif case == "rejected token":
        monkeypatch.setenv("HF_TOKEN", other_token)

    assert main([str(target), "--repo", repo]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert token not in err and other_token not in err
    expected = {
        "missing dir": "no such directory",
        "a file": f"{build / MANIFEST}: a file, not a build directory",
        "bad timeout": "NCAGEN_HUB_TIMEOUT must be a positive number of seconds, got 'soon'",
        "bad endpoint": "HF_ENDPOINT 'huggingface.co' is not the http(s) address of a Hub",
        "broken endpoint": "HF_ENDPOINT 'http://[::1' is not the http(s) address of a Hub",
        "not a build": "not an ncagen build",
        "bad repo id": "bad repo id",
        "missing token": "no Hugging Face token",
        "rejected token": "rejected the token (HTTP 401)",
    }[case]
    assert expected in err
    if case != "rejected token":
        assert hub.requests == []


@pytest.mark.parametrize("endpoint", ["ftp://hub.example", "http://", "https://:443",
                                      "http://host:99999", "http://host:x"])
def test_an_endpoint_that_is_no_http_address_is_refused(endpoint, build):
    with pytest.raises(ValueError, match="endpoint .* is not the http.s. address of a Hub"):
        publish(build, REPO, endpoint=endpoint, dry_run=True)


def test_the_bars_switch_leaves_a_callers_group_settings_as_they_were(monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(publish_module, "_is_terminal", lambda stream: False)
    disable_progress_bars("huggingface_hub.http_get")
    try:
        with publish_module._no_bars_off_a_terminal():
            assert are_progress_bars_disabled()
        assert are_progress_bars_disabled("huggingface_hub.http_get")
        assert not are_progress_bars_disabled()
    finally:
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()


def test_no_progress_bars_in_a_log_unless_asked(hub, build, token, tmp_path):
    """The publish command with stderr a pipe (a CI or Ray job log), as a subprocess against the
    stand-in Hub: huggingface_hub's per-file bars (redrawn with cursor codes) stay out of it, the
    batch lines stay in; HF_HUB_DISABLE_PROGRESS_BARS=0 brings the bars back."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=token, HF_HUB_DISABLE_XET="1",
               HF_HOME=str(tmp_path / "home"))

    def run(repo, **extra):
        res = subprocess.run([sys.executable, "-m", "ncagen.publish", str(build), "--repo", repo],
                             env={**env, **extra}, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stderr

    quiet = run(REPO)
    assert "pre-uploaded batch 1/1" in quiet and "commit " in quiet
    assert "\x1b[" not in quiet and "it/s]" not in quiet and "B/s]" not in quiet, quiet
    asked = run(REPO + "-bars", HF_HUB_DISABLE_PROGRESS_BARS="0")
    assert "pre-uploaded batch 1/1" in asked and ("B/s]" in asked or "it/s]" in asked), asked


@pytest.mark.parametrize(
    "revision", ["a..b", "bad branch~^:", "-x", "x/", "x.lock", "x.", "a//b", "a@{1}", "@", "a/.b",
                 "tab\there", "back\\slash", "star*", "0" * 40]
)
def test_bad_revisions_are_refused_before_contacting_the_hub(revision, hub, build, capsys):
    assert main([str(build), "--repo", REPO, f"--revision={revision}"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: bad revision {revision!r}: expected a git branch name")
    assert hub.requests == [] and hub.repos == {}


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_hub_is_one_line_status_1_without_the_endpoints_password(
    hub, build, capsys, monkeypatch
):
    from huggingface_hub import constants

    endpoint = f"http://user:Pass123@127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)

    assert main([str(build), "--repo", REPO]) == 1

    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "could not reach the Hub at http://***@127.0.0.1:" in err and "Pass123" not in err


def test_hub_that_never_answers_times_out_in_one_line(hub, build, capsys, monkeypatch):
    from huggingface_hub import constants

    silent = socket.socket()  # listening: the kernel completes connections; nobody answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("NCAGEN_HUB_TIMEOUT", "0.5")
    status = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: status.append(main([str(build), "--repo", REPO])),
                              daemon=True)
    try:
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "publish still waits for the Hub"
    finally:
        silent.close()  # lets a hung request fail, so no thread outlives the test
    assert status == [1] and time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert f"the Hub at {endpoint} did not answer in time" in err and "0.5 s" in err


@pytest.mark.parametrize("stall", [("GET", "/revision/"), ("POST", "/commit/")])
def test_hub_that_stalls_mid_way_times_out_in_one_line(hub, build, capsys, monkeypatch, stall):
    # the stand-in Hub answers whoami and what comes before the stall, then holds one kind of
    # request and says nothing, as a Hub that stalls would; huggingface_hub's own client would
    # wait for ever (repo_info even passes timeout=None). Requests huggingface_hub retries (the
    # tree listing, uploads) take 6 tries of the limit and 23 s of back-off: not timed here
    from huggingface_hub.utils import _http

    monkeypatch.setenv("NCAGEN_HUB_TIMEOUT", "0.5")  # a later request: 10 x 0.5 s without a byte
    hub.stall_on = stall
    factory = _http._GLOBAL_CLIENT_FACTORY
    status = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: status.append(main([str(build), "--repo", REPO])),
                              daemon=True)
    worker.start()
    worker.join(40)
    assert not worker.is_alive(), f"publish still waits for the stalled {stall}"
    assert status == [1] and time.monotonic() - started < 30
    assert hub.requests_to(*stall), "the stall was not reached"
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "did not answer in time (ReadTimeout" in err and "5 s without a byte" in err
    assert "rerun the same command to resume" in err
    assert _http._GLOBAL_CLIENT_FACTORY is factory  # the client's maker is put back

    hub.stall_on = None
    assert main([str(build), "--repo", REPO]) == 0  # and a rerun finishes it
    assert hub.commit_count(REPO) == 2  # the repository's initial commit and the rerun's


def test_the_limits_hold_on_a_remade_client_and_the_users_factory_stays():
    # huggingface_hub closes its shared client after a connection error and makes a new one
    # from its factory: the limits must be on that one too. A user's own factory (here one that
    # adds a header, as a proxy set-up might) keeps making the clients, and comes back after.
    import httpx2
    from huggingface_hub.utils import _http, close_session, get_session, set_client_factory

    def users_factory():
        return httpx2.Client(headers={"X-Mine": "1"}, timeout=None)

    silent = socket.socket()  # listening: the kernel completes connections; nobody answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/whoami-v2"
    set_client_factory(users_factory)
    try:
        with publish_module._request_timeouts(0.2):
            close_session()  # what huggingface_hub does after a ConnectError
            session = get_session()
            assert session.headers["X-Mine"] == "1"
            raised = []

            def ask():  # as repo_info asks: no limit
                try:
                    session.get(url, timeout=None)
                except Exception as err:  # noqa: BLE001
                    raised.append(err)

            asking = threading.Thread(target=ask, daemon=True)
            asking.start()
            asking.join(10)
            assert not asking.is_alive(), "the remade client waits for ever"
            assert [type(e) for e in raised] == [httpx2.ReadTimeout]
        assert _http._GLOBAL_CLIENT_FACTORY is users_factory
        assert not get_session().event_hooks["request"]  # no hook of ours is left
    finally:
        silent.close()
        set_client_factory(_http.default_client_factory)


def test_hub_failing_mid_way_is_status_1(hub, build, capsys):
    hub.fail_commits = 1

    assert main([str(build), "--repo", REPO]) == 1

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Hub request failed (HTTP 500)" in err
    assert "rerun the same command to resume" in err
    assert main([str(build), "--repo", REPO]) == 0  # and a rerun finishes it


def test_an_fsspec_clients_own_errors_are_one_line(capsys, monkeypatch):
    # hf:// through huggingface_hub's fsspec filesystem, pointed at a closed port on 127.0.0.1:
    # its HTTP client raises a ConnectError, which is not an OSError
    from huggingface_hub import HfFileSystem, constants

    from ncagen.card import main as card

    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    HfFileSystem.clear_instance_cache()  # an instance made for another endpoint is not reused
    try:
        for command in (lambda: main(["hf://datasets/org/x", "--repo", REPO, "--dry-run"]),
                        lambda: card(["hf://datasets/org/x"])):
            assert command() == 1
            out, err = capsys.readouterr()
            assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert "hf://datasets/org/x" in err and "ConnectError" in err
    finally:
        HfFileSystem.clear_instance_cache()


def test_a_malformed_hub_url_stays_a_refusal(capsys):
    # huggingface_hub's fsspec filesystem refuses the path itself (a ValueError), before any
    # request: bad input, exit status 2, not an environment failure to rerun
    from ncagen.card import main as card

    for command in (lambda: main(["hf://datasets/org/bad..name", "--repo", REPO, "--dry-run"]),
                    lambda: card(["hf://datasets/org/bad..name"])):
        assert command() == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "bad..name" in err and "rerun" not in err


class ClientDropped(Exception):
    """A filesystem client's own error, not an OSError (as an HTTP client's can be)."""


def test_overlapping_publishes_keep_the_limits_until_the_last_ends():
    # two publishes in threads of one process: A starts, B starts, A ends first
    from huggingface_hub.utils import _http, get_session

    before = _http._GLOBAL_CLIENT_FACTORY
    a, b = publish_module._request_timeouts(1.0), publish_module._request_timeouts(1.0)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert _http._GLOBAL_CLIENT_FACTORY is not before  # B still runs with the limits
    assert any(h.__name__ == "fill" for h in get_session().event_hooks["request"])
    b.__exit__(None, None, None)
    assert _http._GLOBAL_CLIENT_FACTORY is before
    assert not any(h.__name__ == "fill" for h in get_session().event_hooks["request"])


class Dropping:
    """fsspec's in-process memory filesystem under the name dropping://, whose Parquet files'
    reads fail with the client's own exception (made a filesystem class by `register`)."""

    @staticmethod
    def register() -> None:
        import fsspec
        from fsspec.implementations.memory import MemoryFileSystem

        class DroppingFileSystem(MemoryFileSystem):
            protocol = ("dropping",)

            @classmethod
            def _strip_protocol(cls, path):
                return super()._strip_protocol(path.replace("dropping://", "memory://", 1))

            def _open(self, path, mode="rb", **kwargs):
                f = super()._open(path, mode, **kwargs)
                if path.endswith(".parquet") and "r" in mode:
                    def read(*args):
                        raise ClientDropped("the connection was dropped")
                    f.read = read
                return f

        fsspec.register_implementation("dropping", DroppingFileSystem, clobber=True)


def test_a_filesystem_clients_failing_reads_are_one_line(memory_url, tmp_path, capsys):
    # publish hashes the shards of a build whose manifest records no listing times; the card
    # scans every shard of a real build
    from ncagen.build import main as build
    from ncagen.card import main as card

    Dropping.register()
    built = f"memory://ncagen-dropping-{secrets.token_hex(6)}/ds"
    assert build(["--rows", "40", "--seq-len", "380", "--executor", "local", "--out", built]) == 0
    capsys.readouterr()
    for command in (lambda: main([memory_url.replace("memory://", "dropping://", 1), "--repo",
                                  REPO, "--dry-run"]),
                    lambda: card([built.replace("memory://", "dropping://", 1), "--no-figures"])):
        assert command() == 1
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "ClientDropped: the connection was dropped" in err


def test_object_store_credentials_are_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    assert main(["s3://AKIDKEY:Secret123@bucket/ds", "--repo", REPO, "--dry-run"]) == 1

    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "cannot read s3://***@bucket/ds" in err
    assert "Secret123" not in err and "AKIDKEY" not in err


def test_publish_from_memory_url_stages_one_batch_and_hashes_each_shard_once(
    hub, build, memory_url, tmp_path, monkeypatch
):
    """An object-store build (memory:// here, s3:// alike) goes through the same code path."""
    from huggingface_hub import HfApi

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the staging folder goes
    staged_at_commit = []
    create_commit = HfApi.create_commit

    def spy_create_commit(self, *args, **kwargs):
        staged = (p.relative_to(scratch).parts[1:] for p in scratch.rglob("*") if p.is_file())
        staged_at_commit.append(sorted("/".join(parts) for parts in staged))
        return create_commit(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", spy_create_commit)

    report = publish(memory_url, REPO, endpoint=hub.url)

    assert {f.path for f in report.uploaded} == EXPECTED
    assert {p: hub.files(REPO)[p] for p in EXPECTED} == local_bytes(build)
    assert set(hub.files(REPO)) == EXPECTED | {".gitattributes"}
    # LFS content left the staging folder once the Hub held it; small regular files wait there.
    assert staged_at_commit == [["README.md", MANIFEST]]
    assert list(scratch.iterdir()) == []

    hashed = []
    digest = publish_module._digest
    monkeypatch.setattr(
        publish_module, "_digest", lambda b, f, d: hashed.append(f.path) or digest(b, f, d)
    )
    again = publish(memory_url, REPO, endpoint=hub.url)

    assert again.commit is None and set(again.unchanged) == EXPECTED
    # memory:// lists no mtimes, so each shard is hashed once, before the Hub is contacted;
    # the Hub's listing is then compared with the manifest's SHA-256, not the bytes
    assert sorted(p for p in hashed if p.startswith("data/")) == [SMALL, BIG]


def test_memory_url_refusals_are_one_line(hub, memory_url, capsys):
    import fsspec

    memory = fsspec.filesystem("memory")
    path = memory_url.removeprefix("memory:/")
    manifest = json.loads(memory.cat(f"{path}/{MANIFEST}"))
    memory.pipe(f"{path}/{MANIFEST}", json.dumps({**manifest, "complete": False}).encode())

    assert main([memory_url, "--repo", REPO]) == 2
    assert main(["memory://ncagen-test-nowhere", "--repo", REPO]) == 2

    out, err = capsys.readouterr()
    assert out == "" and hub.requests == []
    first, second = err.splitlines()
    assert f"the build in {memory_url} is not complete" in first and REFUSAL_FIX in first
    assert "memory://ncagen-test-nowhere: no such directory" in second


def test_server_pages_tree_and_answers_paths_info(hub, build):
    from huggingface_hub import HfApi

    publish(build, REPO, endpoint=hub.url)
    hub.tree_page_size = 2
    api = HfApi(endpoint=hub.url)

    tree = list(api.list_repo_tree(REPO, recursive=True, repo_type="dataset"))
    files = {e.path: e for e in tree if hasattr(e, "blob_id")}
    assert set(files) == EXPECTED | {".gitattributes"}
    assert files[BIG].lfs.sha256 == hashlib.sha256((build / BIG).read_bytes()).hexdigest()
    assert len(hub.requests_to("GET", "/tree/main")) > 3  # followed the Link header page by page
    info = api.get_paths_info(REPO, ["README.md", "data", "missing.txt"], repo_type="dataset")
    assert sorted(e.path for e in info) == ["README.md", "data"]


def test_branch_moving_after_the_plan_fails_the_commit_and_deletes_nothing(
    hub, build, monkeypatch
):
    from huggingface_hub import HfApi

    publish(build, REPO, endpoint=hub.url)
    (build / FIGURE).unlink()
    write_shard(build, SMALL, rows=5, seed=4)
    write_manifest(build)
    preupload, moved = HfApi.preupload_lfs_files, []

    def someone_commits_meanwhile(self, *args, **kwargs):
        if not moved:
            moved.append(True)
            HfApi(endpoint=hub.url).upload_file(
                path_or_fileobj=b"theirs",
                path_in_repo="notes.md",
                repo_id=REPO,
                repo_type="dataset",
            )
        return preupload(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "preupload_lfs_files", someone_commits_meanwhile)
    with pytest.raises(PublishError, match="HTTP 412"):
        publish(build, REPO, endpoint=hub.url)

    assert FIGURE in hub.files(REPO) and hub.files(REPO)["notes.md"] == b"theirs"
    report = publish(build, REPO, endpoint=hub.url)  # a rerun plans against the new head
    assert report.deleted == (FIGURE, "notes.md")
    assert set(hub.files(REPO)) == (EXPECTED - {FIGURE}) | {".gitattributes"}


def test_tag_marks_the_published_commit_and_a_rerun_changes_nothing(hub, build, capsys):
    from huggingface_hub import HfApi

    assert main([str(build), "--repo", REPO, "--revision", "dev", "--tag", "v1.0"]) == 0

    repo = hub.repo(REPO)
    assert repo.tags == {"v1.0": repo.branches["dev"]} and repo.branches["main"] != repo.tags["v1.0"]
    out = capsys.readouterr().out
    assert f'tagged v1.0: load this release with load_dataset("{REPO}", CONFIG, revision="v1.0")' in out
    refs = HfApi(endpoint=hub.url).list_repo_refs(REPO, repo_type="dataset")
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [
        ("v1.0", "refs/tags/v1.0", repo.tags["v1.0"])
    ]
    assert set(hub.files(REPO, revision="v1.0")) == EXPECTED | {".gitattributes"}
    requests = len(hub.requests)

    report = publish(build, REPO, endpoint=hub.url, revision="dev", tag="v1.0")

    assert report.commit is None and not report.tag_created and report.tag == "v1.0"
    assert repo.tags == {"v1.0": repo.branches["dev"]}
    assert not any("/tag/" in r.path or "/commit/" in r.path for r in hub.requests[requests:])
    assert "tag v1.0 already marks it" in publish_module.format_report(report)


def test_tag_marking_another_commit_is_refused_before_uploading(hub, build, capsys):
    first = publish(build, REPO, endpoint=hub.url, tag="v1.0")
    write_shard(build, SMALL, rows=9, seed=1)
    write_manifest(build)
    requests, puts = len(hub.requests), len(hub.lfs_puts)

    assert main([str(build), "--repo", REPO, "--tag", "v1.0"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert f"tag 'v1.0' already exists on {REPO} at commit {first.commit[:12]}" in err
    assert "publish under a new tag" in err
    new = hub.requests[requests:]
    assert not any("/preupload/" in r.path or "/commit/" in r.path or "lfs" in r.path for r in new)
    assert len(hub.lfs_puts) == puts and hub.repo(REPO).tags == {"v1.0": first.commit}
    assert hub.repo(REPO).branches["main"] == first.commit

    assert main([str(build), "--repo", REPO, "--tag", "v1.1"]) == 0  # a new tag for the new build
    repo = hub.repo(REPO)
    assert repo.tags["v1.1"] == repo.branches["main"] != first.commit
    assert hub.files(REPO, revision="v1.0")[SMALL] != hub.files(REPO, revision="v1.1")[SMALL]


@pytest.mark.parametrize("case", ["bad name", "commit-like name", "tag is the branch", "a branch",
                                  "a full ref", "HEAD"])
def test_bad_tags_are_one_line_with_status_2(case, hub, build, capsys):
    args = [str(build), "--repo", REPO]
    if case == "a branch":
        publish(build, REPO, endpoint=hub.url, revision="stable")
    requests = len(hub.requests)
    args += {
        "bad name": ["--tag", "v1..0"],
        "commit-like name": ["--tag", "0" * 40],
        "tag is the branch": ["--revision", "stable", "--tag", "stable"],
        "a branch": ["--tag", "stable"],
        "a full ref": ["--tag", "refs/heads/main"],  # git would store refs/tags/refs/heads/main
        "HEAD": ["--tag", "HEAD"],
    }[case]

    assert main(args) == 2

    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: ")
    expected = {
        "bad name": "bad tag 'v1..0'",
        "commit-like name": "bad tag",
        "tag is the branch": "has the name of the branch it would tag",
        "a branch": f"'stable' is a branch of {REPO}",
        "a full ref": "bad tag 'refs/heads/main': HEAD and names starting with refs/",
        "HEAD": "bad tag 'HEAD'",
    }[case]
    assert expected in err
    new = hub.requests[requests:]
    assert not any("/preupload/" in r.path or "/commit/" in r.path for r in new)
    if case != "a branch":
        assert new == []
    assert hub.repos == {} or hub.repo(REPO).tags == {}


def test_a_release_published_without_its_tag_says_which_tag_its_card_pins(hub, build, capsys):
    manifest = json.loads((build / MANIFEST).read_text())
    (build / MANIFEST).write_text(json.dumps({**manifest, "release": "1.0"}))

    assert main([str(build), "--repo", REPO]) == 0
    out = capsys.readouterr().out
    assert 'release 1.0 and its card pins revision="v1.0"' in out and "--tag v1.0" in out
    assert hub.repo(REPO).tags == {}  # a hint, not a tag nobody asked for
    assert main([str(build), "--repo", REPO, "--tag", "v1.0"]) == 0
    assert "its card pins" not in capsys.readouterr().out
    assert main([str(build), "--repo", REPO, "--revision", "next", "--tag", "v2"]) == 0
    assert 'its card pins revision="v1.0", which this publish did not create' in capsys.readouterr().out
