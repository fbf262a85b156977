"""Publish a built dataset directory as a Hugging Face Hub dataset repository.

A build directory (README.md, ncagen.json, data/<config>/*.parquet, figures/*.png, ...) is
mirrored into a dataset repo: the repo and, when asked, the branch are created if missing, the
Hub's own listing of the branch is compared with local hashes (git blob SHA-1 for plain files,
SHA-256 for LFS/Xet files), and only new or changed files are committed, a batch of files per
commit with the data before the card. An interrupted publish is resumed by running it again:
committed batches compare equal and are skipped, and content already stored on the Hub from an
unfinished batch is not sent again (the LFS batch API and Xet deduplication both skip it).

Hidden files and folders (.cache, .gitattributes, ...) and temporary files (*.tmp, *.partial,
...) are never uploaded, and nothing is ever deleted on the Hub: files there that the build
lacks are reported as `remote_only`. The token is resolved by huggingface_hub (argument,
HF_TOKEN, then the login cache) and goes nowhere but the Authorization header.

    python -m ncagen.publish out/ncagen --repo ORG/NAME [--private] [--revision BRANCH] [--dry-run]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

logger = logging.getLogger(__name__)

MANIFEST = "ncagen.json"
FILES_PER_COMMIT = 100
TEMP_SUFFIXES = frozenset({".tmp", ".temp", ".part", ".partial", ".incomplete", ".lock", ".swp"})
SKIPPED_DIRS = frozenset({"__pycache__"})
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_HASH_BLOCK = 1 << 20


class PublishError(RuntimeError):
    """The Hub refused or failed a publish step; the message is one line and holds no secret."""


@dataclass(frozen=True)
class DatasetFile:
    """One local file of the build and where it goes in the repo."""

    path: str  # POSIX path inside the repo, e.g. "data/band_50_100/shard-00000.parquet"
    local: Path
    size: int


@dataclass(frozen=True)
class PublishReport:
    """What a publish did (or, in a dry run, would do)."""

    repo_id: str
    revision: str
    url: str
    dry_run: bool
    uploaded: tuple[DatasetFile, ...]  # sent to the Hub; in a dry run, the files that would be
    unchanged: tuple[str, ...]  # already on the Hub with the same content
    remote_only: tuple[str, ...]  # on the Hub but not in the build (left in place)
    commits: tuple[str, ...]  # ids of the commits created

    @property
    def uploaded_bytes(self) -> int:
        """Total size of the uploaded files."""
        return sum(f.size for f in self.uploaded)


def check_build_dir(out_dir: str | os.PathLike) -> Path:
    """Return the build directory as a Path, or raise ValueError if it is not an ncagen build."""
    root = Path(out_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: no such directory")
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"{root} is not an ncagen build (no {MANIFEST})")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{manifest} must hold a JSON object")
    return root


def check_repo_id(repo_id: str) -> str:
    """Return `repo_id` if it reads ORG/NAME as the Hub allows, else raise ValueError."""
    ok = (
        isinstance(repo_id, str)
        and REPO_ID.fullmatch(repo_id) is not None
        and len(repo_id) <= 96
        and "--" not in repo_id
        and ".." not in repo_id
        and not repo_id.endswith((".git", ".ipynb"))
    )
    if not ok:
        raise ValueError(
            f"bad repo id {repo_id!r}: expected ORG/NAME of letters, digits, '-', '_' and '.'"
        )
    return repo_id


def is_dataset_file(path: PurePosixPath) -> bool:
    """Whether a repo-relative path belongs to the dataset (not hidden, not temporary)."""
    if any(part.startswith(".") or part in SKIPPED_DIRS for part in path.parts):
        return False
    name = path.name
    if name.startswith("~") or name.endswith("~"):
        return False
    return not any(suffix.lower() in TEMP_SUFFIXES for suffix in PurePosixPath(name).suffixes)


def dataset_files(root: Path) -> list[DatasetFile]:
    """Files of a build to publish: folders (data, figures) first, top-level files (card) last."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        dirnames[:] = sorted(d for d in dirnames if is_dataset_file(rel_dir / d))
        for name in filenames:
            rel = rel_dir / name
            local = Path(dirpath) / name
            if is_dataset_file(rel) and local.is_file():
                found.append(
                    DatasetFile(path=rel.as_posix(), local=local, size=local.stat().st_size)
                )
    return sorted(found, key=lambda f: ("/" not in f.path, f.path))


def git_blob_sha1(path: Path) -> str:
    """Git object id of the file's content (what the Hub lists for plain files)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of the file's content (what the Hub lists for LFS and Xet files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def same_content(local: DatasetFile, remote: RepoFile) -> bool:
    """Whether a Hub `RepoFile` holds exactly the local file's bytes."""
    if remote.size != local.size:
        return False
    if remote.lfs is not None:
        return sha256_file(local.local) == remote.lfs.sha256
    return git_blob_sha1(local.local) == remote.blob_id


def plan_upload(
    files: list[DatasetFile], remote: dict[str, RepoFile]
) -> tuple[list[DatasetFile], list[str], list[str]]:
    """Split local files against the Hub listing: (to upload, unchanged, only on the Hub)."""
    to_upload, unchanged = [], []
    for f in files:
        if f.path in remote and same_content(f, remote[f.path]):
            unchanged.append(f.path)
        else:
            to_upload.append(f)
    local_paths = {f.path for f in files}
    remote_only = sorted(
        p for p in remote if p not in local_paths and is_dataset_file(PurePosixPath(p))
    )
    return to_upload, unchanged, remote_only


def remote_files(api: HfApi, repo_id: str, branch: str) -> dict[str, RepoFile]:
    """Path -> `RepoFile` for every file of the dataset repo's branch, as the Hub lists it."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFolder

    try:
        tree = api.list_repo_tree(repo_id, recursive=True, revision=branch, repo_type="dataset")
        return {entry.path: entry for entry in tree if not isinstance(entry, RepoFolder)}
    except (RevisionNotFoundError, EntryNotFoundError):
        return {}  # a repo without any commit yet


def repo_url(endpoint: str, repo_id: str, revision: str) -> str:
    """Web address of the dataset repo at a branch."""
    url = f"{endpoint.rstrip('/')}/datasets/{repo_id}"
    return url if revision == "main" else f"{url}/tree/{quote(revision, safe='')}"


def publish(
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    files_per_commit: int = FILES_PER_COMMIT,
) -> PublishReport:
    """Upload the new and changed files of a build to the Hub dataset repo `repo_id`."""
    root = check_build_dir(out_dir)
    check_repo_id(repo_id)
    if revision is not None and not revision.strip():
        raise ValueError("revision must be a non-empty branch name")
    if files_per_commit < 1:
        raise ValueError(f"files_per_commit must be at least 1, got {files_per_commit}")
    branch = revision or "main"
    files = dataset_files(root)

    from huggingface_hub import constants

    if dry_run:
        url = repo_url(endpoint or constants.ENDPOINT, repo_id, branch)
        return PublishReport(
            repo_id,
            branch,
            url,
            dry_run=True,
            uploaded=tuple(files),
            unchanged=(),
            remote_only=(),
            commits=(),
        )

    from huggingface_hub.errors import HfHubHTTPError

    try:
        return _publish(root, files, repo_id, branch, private, token, endpoint, files_per_commit)
    except HfHubHTTPError as err:
        raise PublishError(_describe_http_error(err)) from err
    except _network_errors() as err:
        where = endpoint or constants.ENDPOINT
        raise PublishError(
            f"could not reach the Hub at {where}: {type(err).__name__}: {err}"
        ) from err


def _publish(
    root: Path,
    files: list[DatasetFile],
    repo_id: str,
    branch: str,
    private: bool,
    token: str | None,
    endpoint: str | None,
    files_per_commit: int,
) -> PublishReport:
    """The networked part of `publish`; Hub HTTP errors propagate to the caller."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(endpoint=endpoint, token=token, library_name="ncagen")
    _check_write_access(api.whoami())

    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if branch != "main":
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
    url = repo_url(api.endpoint, repo_id, branch)

    remote = remote_files(api, repo_id, branch)
    to_upload, unchanged, remote_only = plan_upload(files, remote)
    upload_bytes = _human_bytes(sum(f.size for f in to_upload))
    logger.info(
        "%s: %d files to upload (%s), %d unchanged",
        root,
        len(to_upload),
        upload_bytes,
        len(unchanged),
    )

    batches = [
        to_upload[i : i + files_per_commit] for i in range(0, len(to_upload), files_per_commit)
    ]
    commits = []
    for number, batch in enumerate(batches, start=1):
        suffix = f" ({number}/{len(batches)})" if len(batches) > 1 else ""
        operations = [
            CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.local)) for f in batch
        ]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"Upload {len(batch)} files{suffix}",
            repo_type="dataset",
            revision=branch,
        )
        commits.append(info.oid)
        batch_bytes = _human_bytes(sum(f.size for f in batch))
        logger.info("commit %d/%d: %d files, %s", number, len(batches), len(batch), batch_bytes)
    return PublishReport(
        repo_id,
        branch,
        url,
        dry_run=False,
        uploaded=tuple(to_upload),
        unchanged=tuple(unchanged),
        remote_only=tuple(remote_only),
        commits=tuple(commits),
    )


def _network_errors() -> tuple[type[Exception], ...]:
    """Connection-level exceptions of the HTTP client that huggingface_hub runs on."""
    kinds: list[type[Exception]] = []
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x, 1.x
        try:
            kinds.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


def _check_write_access(whoami: dict) -> None:
    """Refuse read-only tokens up front rather than after hashing and uploading."""
    role = ((whoami.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PublishError("the Hugging Face token is read-only; publishing needs a write token")


def _describe_http_error(err: HfHubHTTPError) -> str:
    """One line for a Hub HTTP error, naming rejected credentials plainly."""
    status = err.response.status_code if err.response is not None else None
    if status in (401, 403):
        return (
            f"the Hub rejected the token (HTTP {status}): "
            "check HF_TOKEN or `hf auth login`, and write access"
        )
    first_line = next(
        (line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__
    )
    return f"Hub request failed (HTTP {status}): {first_line}"


def _human_bytes(n: int) -> str:
    """Byte count for people: 930 B, 1.5 MB."""
    units = ("B", "kB", "MB", "GB", "TB")
    size, unit = float(n), 0
    while size >= 1000 and unit < len(units) - 1:
        size, unit = size / 1000, unit + 1
    return f"{n} B" if unit == 0 else f"{size:.1f} {units[unit]}"


def format_report(report: PublishReport) -> str:
    """Short human summary of a publish, for the CLI."""
    files = f"{len(report.uploaded)} files ({_human_bytes(report.uploaded_bytes)})"
    if report.dry_run:
        lines = [f"dry run, Hub not contacted: {files} to publish; unchanged ones are skipped then"]
        lines += [f"  {f.path}  {_human_bytes(f.size)}" for f in report.uploaded]
    else:
        lines = [
            f"uploaded {files} in {len(report.commits)} commit(s), "
            f"skipped {len(report.unchanged)} unchanged"
        ]
        if report.remote_only:
            lines.append(
                f"{len(report.remote_only)} files on the Hub are not in the build (left in place)"
            )
    lines.append(report.url)
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags of `python -m ncagen.publish`."""
    parser = argparse.ArgumentParser(
        prog="python -m ncagen.publish", description=__doc__.splitlines()[0]
    )
    parser.add_argument("dir", metavar="DIR", help="build directory (holds ncagen.json)")
    parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub dataset repo id")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (if it does not exist)"
    )
    parser.add_argument(
        "--revision", metavar="BRANCH", help="branch to publish to, created if missing"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be uploaded; contact nothing"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)  # our progress lines, without the HTTP client's per-request ones
    try:
        report = publish(
            args.dir, args.repo, private=args.private, revision=args.revision, dry_run=args.dry_run
        )
    except (ValueError, PublishError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
