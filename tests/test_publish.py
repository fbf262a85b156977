"""Publishing a build to the Hub, against the in-process stand-in server of hub_server.py."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub_server import HubServer
from ncagen.publish import PublishError, dataset_files, main, publish

# huggingface_hub's LFS PUT passes a file as `data=`, which its HTTP client flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "ncagen-org/nca-test"
BIG = "data/band_50_100/shard-00001.parquet"
SMALL = "data/band_50_100/shard-00000.parquet"
EXPECTED = {"README.md", "ncagen.json", SMALL, BIG, "figures/ratios.png"}


def write_build(root: Path) -> Path:
    """A hand-made build directory: card, manifest, two shards (one over 10 MB), a figure, junk."""
    rng = np.random.default_rng(0)
    shards = root / "data" / "band_50_100"
    shards.mkdir(parents=True)
    (root / "README.md").write_text("---\nlicense: mit\n---\n# NCA test set\n")
    (root / "ncagen.json").write_text(json.dumps({"format": 1}))
    small = pa.table(
        {"seed": pa.array(np.arange(8, dtype=np.int64)), "ratio": pa.array(rng.random(8))}
    )
    pq.write_table(small, shards / "shard-00000.parquet")
    rows = [rng.bytes(1 << 20) for _ in range(11)]  # incompressible, so the file stays over 10 MB
    pq.write_table(
        pa.table({"tokens": pa.array(rows, pa.binary())}), root / BIG, compression="none"
    )
    (root / "figures").mkdir()
    (root / "figures" / "ratios.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(2000))
    (shards / "shard-00002.parquet.tmp").write_bytes(b"half a shard")  # a writer's temp file
    (root / ".cache").mkdir()
    (root / ".cache" / "state.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\0")
    assert (root / BIG).stat().st_size > 10 * 1024 * 1024
    return root


def local_bytes(root: Path) -> dict[str, bytes]:
    """Content of every file of the build that should be published."""
    return {p: (root / p).read_bytes() for p in EXPECTED}


def commit_ops(hub: HubServer) -> list[list[dict]]:
    """The operations of every commit request the server received, one list per request."""
    out = []
    for request in hub.requests_to("POST", "/commit/"):
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        out.append([line for line in lines if line["key"] != "header"])
    return out


@pytest.fixture
def token() -> str:
    return "hf_" + secrets.token_urlsafe(24)


@pytest.fixture
def hub(token, tmp_path, monkeypatch):
    """A running stand-in Hub, huggingface_hub pointed at it and cut off from any real login."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    home.mkdir()
    with HubServer(token) as server:
        for name in ("HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        # huggingface_hub reads these once at import; patch the values it actually consults.
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        # The stand-in speaks the LFS batch API, not Xet.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        yield server


@pytest.fixture
def build(tmp_path) -> Path:
    return write_build(tmp_path / "build")


def test_dataset_files_skip_hidden_and_temporary(build):
    files = dataset_files(build)
    assert {f.path for f in files} == EXPECTED
    assert [f.path for f in files][-2:] == ["README.md", "ncagen.json"]  # the card goes last
    assert all(f.size == (build / f.path).stat().st_size for f in files)


def test_publish_uploads_every_file_byte_identical(hub, build, tmp_path):
    report = publish(build, REPO, endpoint=hub.url)

    assert not report.dry_run and report.revision == "main"
    assert {f.path for f in report.uploaded} == EXPECTED
    assert report.uploaded_bytes == sum(len(b) for b in local_bytes(build).values())
    assert report.unchanged == () and len(report.commits) == 1
    assert report.url == f"{hub.url}/datasets/{REPO}"
    remote = hub.files(REPO)
    assert set(remote) == EXPECTED | {".gitattributes"}
    assert {p: remote[p] for p in EXPECTED} == local_bytes(build)
    big_oid = hub.repo(REPO).commits[report.commits[0]][BIG].sha256
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

    assert report.uploaded == () and report.commits == ()
    assert set(report.unchanged) == EXPECTED and report.remote_only == ()
    assert hub.commit_count(REPO) == commits and len(hub.lfs_puts) == puts
    new = hub.requests[requests:]
    assert not any("/commit/" in r.path or "/preupload/" in r.path or "lfs" in r.path for r in new)


def test_changing_one_file_uploads_just_that_file(hub, build):
    publish(build, REPO, endpoint=hub.url)
    commits, puts = hub.commit_count(REPO), len(hub.lfs_puts)
    table = pa.table({"seed": pa.array(np.arange(9, dtype=np.int64))})
    pq.write_table(table, build / SMALL)

    report = publish(build, REPO, endpoint=hub.url)

    assert [f.path for f in report.uploaded] == [SMALL]
    assert set(report.unchanged) == EXPECTED - {SMALL}
    assert hub.commit_count(REPO) == commits + 1
    assert [[op["value"]["path"] for op in ops] for ops in commit_ops(hub)][-1] == [SMALL]
    assert len(hub.lfs_puts) == puts + 1  # only the changed shard's bytes were sent
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


def test_batches_commit_in_order_data_before_card(hub, build):
    report = publish(build, REPO, endpoint=hub.url, files_per_commit=2)

    assert len(report.commits) == 3
    paths = [[op["value"]["path"] for op in ops] for ops in commit_ops(hub)]
    assert paths[-1] == ["ncagen.json"] and "README.md" in paths[-2]


def test_revision_creates_branch_and_leaves_main(hub, build):
    report = publish(build, REPO, endpoint=hub.url, revision="v1-draft")

    assert report.url == f"{hub.url}/datasets/{REPO}/tree/v1-draft"
    assert set(hub.files(REPO, revision="v1-draft")) == EXPECTED | {".gitattributes"}
    assert set(hub.files(REPO, revision="main")) == {".gitattributes"}
    assert publish(build, REPO, endpoint=hub.url, revision="v1-draft").uploaded == ()


def test_files_only_on_hub_are_reported_not_deleted(hub, build):
    publish(build, REPO, endpoint=hub.url)
    (build / "figures" / "ratios.png").unlink()

    report = publish(build, REPO, endpoint=hub.url)

    assert report.remote_only == ("figures/ratios.png",)
    assert "figures/ratios.png" in hub.files(REPO)


def test_token_travels_only_in_authorization_header(hub, build, token, capsys, caplog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_DEBUG", True)  # the client's most talkative logging
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")

    assert main([str(build), "--repo", REPO]) == 0
    (build / SMALL).write_bytes(b"changed")
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


@pytest.mark.parametrize(
    "case", ["missing dir", "not a build", "bad repo id", "missing token", "rejected token"]
)
def test_cli_errors_are_one_line_with_status_2(
    case, hub, build, token, tmp_path, capsys, monkeypatch
):
    target, repo, other_token = build, REPO, "hf_" + secrets.token_urlsafe(24)
    if case == "missing dir":
        target = tmp_path / "nowhere"
    elif case == "not a build":
        (build / "ncagen.json").unlink()
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
        "not a build": "not an ncagen build",
        "bad repo id": "bad repo id",
        "missing token": "no Hugging Face token",
        "rejected token": "rejected the token (HTTP 401)",
    }[case]
    assert expected in err
    if case != "rejected token":
        assert hub.requests == []


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
