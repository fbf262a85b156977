"""Publish a built dataset directory as a Hugging Face Hub dataset repository.

A build (README.md, ncagen.json, data/<config>/*.parquet, figures/*.png, ...) in a local folder
or an object store (s3://bucket/prefix or any fsspec URL) is mirrored into a dataset repo.
Only a complete build whose data files match its manifest is published; anything else is
refused before the Hub is contacted. The repo and, when asked, the branch are created if
missing, the Hub's own listing of the branch is compared with the build (git blob SHA-1 for
plain files, SHA-256 for LFS/Xet files, taken from the manifest for data shards), and one
commit on top of that listing adds the new and changed files and deletes the dataset files the
build no longer has, so the branch never shows old and new shards side by side and never lacks
data. With a tag (`--tag v1.0`) the commit the branch then holds is tagged too, so the release
can be loaded pinned (`load_dataset(repo, config, revision="v1.0")`) whatever the branch holds
later; a tag never moves, so a tag that already marks another commit is refused before anything
is uploaded, while a rerun that changes nothing finds its tag in place. Before that commit, LFS
content is pre-uploaded a batch at a time; an interrupted publish
is resumed by running it again, and content already stored on the Hub is not sent again (the
LFS batch API and Xet deduplication both skip it). Files from an object store are copied to a
local staging folder a batch at a time and each is removed as soon as the Hub holds it.

Every data shard is checked against its manifest record before the Hub is contacted: a local
shard is hashed (once: the upload reuses that SHA-256), a shard in an object store is matched
by size and modification time (one listing, as a resumed build does) and hashed while it is
staged, before its bytes are sent. The first Hub request (whoami) gives up after
NCAGEN_HUB_TIMEOUT seconds (default 30), so a Hub that never answers fails in one line; every
later request gives up when connecting takes that long or when the Hub sends or takes no byte
for STALL_FACTOR times as long (the Hub may take a while to answer a large commit), so a Hub
that stalls mid-way fails too instead of hanging publish (huggingface_hub's own client waits
for ever). Requests huggingface_hub retries itself (listings, LFS uploads) get up to 6 tries
of that first; uploads through hf_xet run on Xet's own client, which these limits miss.

Exit status (as for the build): 0 done; 2 refused before anything was uploaded (bad input, a
build that does not match its manifest, a missing or rejected token, a tag in the way); 1 the
environment failed (the Hub unreachable or failing, the build's storage unreadable): rerunning
the same command resumes. Credentials in a URL (HF_ENDPOINT, s3://KEY:SECRET@bucket/...) are
never printed.

Hidden files and folders (.cache, .gitattributes, ...) and temporary files (*.tmp, *.partial,
...) are never uploaded, and never deleted on the Hub either. The token is resolved by
huggingface_hub (argument, HF_TOKEN, then the login cache) and goes nowhere but the
Authorization header.

    python -m ncagen.publish DIR --repo ORG/NAME [--private] [--revision BRANCH] [--tag TAG]
                             [--dry-run]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import logging
import os
import posixpath
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Iterator
from urllib.parse import quote, urlsplit

from pyarrow import fs

from .recipe import release_tag
from .shards import MANIFEST
from .storage import filesystem, redact

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

logger = logging.getLogger(__name__)

FILES_PER_BATCH = 100  # files pre-uploaded together
STAGING_BYTES = 1 << 30  # at most this much of an object-store build is staged locally at once
TEMP_SUFFIXES = frozenset({".tmp", ".temp", ".part", ".partial", ".incomplete", ".lock", ".swp"})
SKIPPED_DIRS = frozenset({"__pycache__"})
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
BRANCH_FORBIDDEN = frozenset(" ~^:?*[\\") | {chr(c) for c in (*range(32), 127)}  # as git's
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
HUB_TIMEOUT = 30.0  # seconds the first Hub request may take; NCAGEN_HUB_TIMEOUT overrides
STALL_FACTOR = 10  # a later request may go this many times HUB_TIMEOUT without a byte
RESUME = "rerun the same command to resume"
REBUILD = "rerun its build command to finish it"
_HASH_BLOCK = 1 << 20
_NAMED = 3  # paths a refusal names before it counts the rest


class PublishError(RuntimeError):
    """A publish refused (no or a rejected token, a tag in the way); one line, no secret."""


class PublishFailed(PublishError):
    """The environment failed: the Hub unreachable or failing, the build unreadable; one line,
    no secret. Rerunning the same command resumes."""


@dataclass(frozen=True)
class DatasetFile:
    """One file of the build, at the same path in the repo."""

    path: str  # POSIX path, e.g. "data/band_50_100/train-00000-of-00002.parquet"
    size: int
    sha256: str | None = None  # the manifest's record for a data shard; None: hash the file
    mtime_ns: int | None = None  # as listed; an object-store shard is matched by it
    recorded_mtime_ns: int | None = None  # the manifest's record for a data shard


@dataclass(frozen=True)
class Build:
    """A complete build, in a local folder or an object store, whose files match its manifest."""

    root: str  # as given: a local path or a URL
    fsys: fs.FileSystem
    base: str  # root's path inside fsys
    files: tuple[DatasetFile, ...]  # to publish: folders (data, figures) first, the card last
    release: str | None = None  # the release version its recipe names, if any

    @property
    def is_local(self) -> bool:
        """Whether the files can be read in place (no staging copy needed)."""
        return isinstance(self.fsys, fs.LocalFileSystem)

    @property
    def name(self) -> str:
        """`root` for messages: without the credentials a URL may carry."""
        return redact(self.root)

    def location(self, f: DatasetFile) -> str:
        """Path of one of the build's files inside fsys."""
        return posixpath.join(self.base, f.path)


@dataclass(frozen=True)
class PublishReport:
    """What a publish did (or, in a dry run, would do)."""

    repo_id: str
    revision: str
    url: str
    dry_run: bool
    uploaded: tuple[DatasetFile, ...]  # sent to the Hub; in a dry run, the files that would be
    unchanged: tuple[str, ...]  # already on the Hub with the same content
    deleted: tuple[str, ...]  # dataset files the build no longer has, deleted in the same commit
    commit: str | None  # id of the one commit created; None when the branch was up to date
    tag: str | None = None  # the tag asked for, which marks the branch's commit after the publish
    tag_created: bool = False  # False: the tag already marked that commit (or a dry run)
    release: str | None = None  # the build's release version (its card names tag v<release>)

    @property
    def uploaded_bytes(self) -> int:
        """Total size of the uploaded files."""
        return sum(f.size for f in self.uploaded)


def load_build(out_dir: str | os.PathLike) -> Build:
    """The build at a local path or URL, or ValueError saying why it must not be published
    (PublishFailed where its storage cannot be read)."""
    root = os.fspath(out_dir)
    name = redact(root)
    try:
        fsys, base = filesystem(root)
        kind = fsys.get_file_info(base).type
        if kind != fs.FileType.Directory:
            raise ValueError(f"{name}: " + ("a file, not a build directory"
                                            if kind == fs.FileType.File else "no such directory"))
        manifest = read_manifest(fsys, base, name)
        files = dataset_files(fsys, base)
    except ImportError as err:  # the filesystem package the URL's scheme needs
        raise ValueError(f"cannot read {name}: {_one_line(err)}") from None
    except OSError as err:
        raise PublishFailed(f"cannot read {name}: {_one_line(err)}; {RESUME}") from err
    check_complete(manifest, name)
    release = manifest.get("release")
    return Build(root, fsys, base, tuple(match_manifest(files, manifest, name)),
                 release=str(release) if release else None)


def read_manifest(fsys: fs.FileSystem, base: str, root: str) -> dict:
    """The build's manifest as a JSON object, or ValueError when it is missing or malformed."""
    where = f"{root.rstrip('/')}/{MANIFEST}"
    path = posixpath.join(base, MANIFEST)
    if fsys.get_file_info(path).type != fs.FileType.File:
        raise ValueError(f"{root} is not an ncagen build (no {MANIFEST})")
    with fsys.open_input_stream(path) as stream:
        raw = stream.read()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{where} is not an ncagen manifest (nested too deep to read)") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} must hold a JSON object")
    return manifest


def check_complete(manifest: dict, root: str) -> None:
    """Refuse a build whose manifest does not say that it finished."""
    if manifest.get("complete") is not True:
        said = json.dumps(manifest.get("complete"))
        raise ValueError(
            f"the build in {root} is not complete ({MANIFEST} says complete: {said}); {REBUILD}"
        )


def match_manifest(files: list[DatasetFile], manifest: dict, root: str) -> list[DatasetFile]:
    """The files, shards carrying the manifest's SHA-256; ValueError where data/ disagrees."""
    shards = manifest.get("shards")
    if not isinstance(shards, dict) or not all(isinstance(e, dict) for e in shards.values()):
        raise ValueError(f"{MANIFEST} in {root} holds no shard list; {REBUILD}")
    data = {f.path: f for f in files if f.path.startswith("data/")}
    problems = []
    if missing := sorted(set(shards) - set(data)):
        problems.append(f"missing: {_name_some(missing)}")
    if extra := sorted(set(data) - set(shards)):
        problems.append(f"not in the manifest: {_name_some(extra)}")
    resized = [
        f"{path} is {data[path].size:,} bytes, recorded {shards[path].get('bytes')}"
        for path in sorted(set(data) & set(shards))
        if shards[path].get("bytes") != data[path].size
    ]
    if resized:
        problems.append(f"size differs: {_name_some(resized)}")
    if unhashed := sorted(p for p in set(data) & set(shards) if not _recorded_sha256(shards[p])):
        problems.append(f"no SHA-256 recorded: {_name_some(unhashed)}")
    if problems:
        raise ValueError(
            f"the files under data/ in {root} do not match its manifest "
            f"({'; '.join(problems)}); {REBUILD}"
        )
    return [
        replace(f, sha256=_recorded_sha256(shards[f.path]),
                recorded_mtime_ns=shards[f.path].get("mtime_ns")) if f.path in shards else f
        for f in files
    ]


def check_content(build: Build) -> None:
    """Refuse a build whose shards do not hold what the manifest records (ValueError), before
    the Hub is contacted; see the module docstring for how each shard is matched."""
    altered = []
    for f in build.files:
        # An object is rewritten whole, so one still listed with its recorded mtime is the one
        # recorded; a copied one (or any local file) only its bytes can vouch for.
        listed_as_recorded = (not build.is_local and f.recorded_mtime_ns is not None
                              and f.mtime_ns == f.recorded_mtime_ns)
        if f.sha256 is not None and not listed_as_recorded:  # None: not a shard, nothing to check
            if _digest(build, f, hashlib.sha256()) != f.sha256:
                altered.append(f.path)
    if altered:
        does = "does" if len(altered) == 1 else "do"
        raise ValueError(
            f"{_name_some(altered)} in {build.name} {does} not hold what {MANIFEST} records "
            f"(the SHA-256 differs); {REBUILD}"
        )


def _recorded_sha256(entry: dict) -> str | None:
    """A shard's SHA-256 from its manifest entry, None when the entry lacks a usable one."""
    sha = entry.get("sha256")
    return sha if isinstance(sha, str) and SHA256.fullmatch(sha) else None


def _name_some(items: list[str]) -> str:
    """The first few items, then how many more there are."""
    named = ", ".join(items[:_NAMED])
    return named if len(items) <= _NAMED else f"{named} and {len(items) - _NAMED} more"


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


def dataset_files(fsys: fs.FileSystem, base: str) -> list[DatasetFile]:
    """Files under `base` to publish: folders (data, figures) first, top-level files (card) last."""
    found = []
    for info in fsys.get_file_info(fs.FileSelector(base, recursive=True)):
        rel = PurePosixPath(posixpath.relpath(info.path, base))
        if info.type == fs.FileType.File and is_dataset_file(rel):
            found.append(DatasetFile(path=rel.as_posix(), size=info.size, mtime_ns=info.mtime_ns))
    return sorted(found, key=lambda f: ("/" not in f.path, f.path))


def git_blob_sha1(build: Build, f: DatasetFile) -> str:
    """Git object id of the file's content (what the Hub lists for plain files)."""
    return _digest(build, f, hashlib.sha1(b"blob %d\0" % f.size))


def content_sha256(build: Build, f: DatasetFile) -> str:
    """SHA-256 of the file's content (what the Hub lists for LFS and Xet files)."""
    return f.sha256 or _digest(build, f, hashlib.sha256())  # a shard's is in the manifest


def _digest(build: Build, f: DatasetFile, digest) -> str:
    """Feed the file's content to a hashlib object and return its hex digest."""
    with build.fsys.open_input_stream(build.location(f)) as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def same_content(build: Build, f: DatasetFile, remote: RepoFile) -> bool:
    """Whether a Hub `RepoFile` holds exactly the bytes of the build's file."""
    if remote.size != f.size:
        return False
    if remote.lfs is not None:
        return content_sha256(build, f) == remote.lfs.sha256
    return git_blob_sha1(build, f) == remote.blob_id


def plan_publish(
    build: Build, remote: dict[str, RepoFile]
) -> tuple[list[DatasetFile], list[str], list[str]]:
    """Split the build against the Hub listing: (to upload, unchanged, stale ones to delete)."""
    to_upload, unchanged = [], []
    for f in build.files:
        if f.path in remote and same_content(build, f, remote[f.path]):
            unchanged.append(f.path)
        else:
            to_upload.append(f)
    ours = {f.path for f in build.files}
    stale = sorted(p for p in remote if p not in ours and is_dataset_file(PurePosixPath(p)))
    return to_upload, unchanged, stale


def remote_files(api: HfApi, repo_id: str, revision: str) -> dict[str, RepoFile]:
    """Path -> `RepoFile` for every file of the dataset repo at a revision, as the Hub lists it."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFolder

    try:
        tree = api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset")
        return {entry.path: entry for entry in tree if not isinstance(entry, RepoFolder)}
    except (RevisionNotFoundError, EntryNotFoundError):
        return {}  # a repo without any commit yet


def check_branch(branch: str) -> str:
    """Return `branch` if git accepts it as a branch name (the rules of `git check-ref-format
    --branch`) and it cannot be read as a commit id, else raise ValueError."""
    parts = branch.split("/") if isinstance(branch, str) else [""]
    ok = (
        bool(branch)
        and branch not in ("@", "HEAD")
        and not BRANCH_FORBIDDEN.intersection(branch)
        and not any(bad in branch for bad in ("..", "//", "@{"))
        and not branch.startswith(("-", "/"))
        and not branch.endswith(("/", ".", ".lock"))
        and not any(part.startswith(".") or part.endswith(".lock") for part in parts)
        and len(branch) <= 255
        and not COMMIT_ID.fullmatch(branch)
    )
    if not ok:
        raise ValueError(
            f"bad revision {branch!r}: expected a git branch name, without spaces, control "
            "characters, '..', '//', '@{' or any of ~^:?*[\\, not starting with '-', '/' or "
            "'.', not ending with '/', '.' or '.lock'"
        )
    return branch


def check_tag(tag: str) -> str:
    """Return `tag` if git and the Hub accept it as a tag name, else raise ValueError."""
    ok = (
        isinstance(tag, str)
        and TAG.fullmatch(tag) is not None
        and len(tag) <= 128
        and ".." not in tag
        and not tag.endswith((".", ".lock"))
        and not COMMIT_ID.fullmatch(tag)  # would read as a commit id
    )
    if not ok:
        raise ValueError(
            f"bad tag {tag!r}: expected a name like v1.0 of letters, digits, '.', '-', '_' "
            "and '/' between parts"
        )
    if tag == "HEAD" or tag.startswith("refs/"):  # git's own name; a full ref (refs/heads/x,
        # the Hub's refs/pr/N) that a revision would resolve to something else
        raise ValueError(f"bad tag {tag!r}: HEAD and names starting with refs/ are git's own; "
                         "give a plain name like v1.0")
    return tag


def check_endpoint(endpoint: str, what: str = "HF_ENDPOINT") -> str:
    """Return `endpoint` if it is an http(s) URL with a host, else raise ValueError naming
    `what` (the address is shown without its credentials)."""
    try:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        ok = ok and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number or out of range, a broken [IPv6] host
        ok = False
    if not ok:
        raise ValueError(f"{what} {redact(str(endpoint))!r} is not the http(s) address of a Hub "
                         "(like https://huggingface.co)")
    return endpoint


def _check_env_endpoint() -> None:
    """ValueError for an HF_ENDPOINT that is not an http(s) address: huggingface_hub parses it
    as it is imported, where a broken one fails without naming it."""
    if os.environ.get("HF_ENDPOINT"):
        check_endpoint(os.environ["HF_ENDPOINT"])


def repo_url(endpoint: str, repo_id: str, revision: str) -> str:
    """Web address of the dataset repo at a branch or tag (without the endpoint's credentials)."""
    url = f"{redact(endpoint).rstrip('/')}/datasets/{repo_id}"
    return url if revision == "main" else f"{url}/tree/{quote(revision, safe='')}"


def publish(
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    tag: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    files_per_batch: int = FILES_PER_BATCH,
) -> PublishReport:
    """Make a branch of the Hub dataset repo `repo_id` hold the build's files, in one commit,
    and tag that commit if asked."""
    check_repo_id(repo_id)
    branch = "main" if revision is None else check_branch(revision)
    if tag is not None:
        check_tag(tag)
        if tag == branch:
            raise ValueError(f"tag {tag!r} has the name of the branch it would tag; pick another")
    if files_per_batch < 1:
        raise ValueError(f"files_per_batch must be at least 1, got {files_per_batch}")
    _check_env_endpoint()
    from huggingface_hub import constants

    check_endpoint(endpoint or constants.ENDPOINT, "endpoint" if endpoint else "HF_ENDPOINT")
    timeout = hub_timeout()
    build = load_build(out_dir)
    try:
        check_content(build)
    except OSError as err:
        raise PublishFailed(f"cannot read {build.name}: {_one_line(err)}; {RESUME}") from err

    if dry_run:
        url = repo_url(endpoint or constants.ENDPOINT, repo_id, branch)
        return PublishReport(
            repo_id,
            branch,
            url,
            dry_run=True,
            uploaded=build.files,
            unchanged=(),
            deleted=(),
            commit=None,
            tag=tag,
            release=build.release,
        )

    from huggingface_hub.errors import HfHubHTTPError

    try:
        with _request_timeouts(timeout):
            return _publish(
                build, repo_id, branch, tag, private, token, endpoint, files_per_batch, timeout
            )
    except PublishError:
        raise
    except Exception as err:  # noqa: BLE001 - the Hub's and the storage's failures, one line
        failure = _failure(err, redact(endpoint or constants.ENDPOINT), timeout, build.name)
        if failure is None:
            raise
        raise failure from err


def _failure(err: BaseException, where: str, timeout: float, name: str) -> PublishError | None:
    """One line for a failure while publishing, or None (a bug: its traceback is kept).
    huggingface_hub wraps an upload's failure in a RuntimeError ("Error while uploading ..."):
    the failure is its cause."""
    from huggingface_hub.errors import HfHubHTTPError

    upload = ""
    while type(err) is RuntimeError and err.__cause__ is not None:
        named = re.search(r"uploading '([^']+)'", str(err))
        upload = f" (uploading {named[1]})" if named else upload
        err = err.__cause__
    if isinstance(err, HfHubHTTPError):
        return _http_error(err)
    if isinstance(err, _network_errors()):
        if "Timeout" in type(err).__name__:  # ConnectTimeout, ReadTimeout, ...
            return PublishFailed(
                f"the Hub at {where} did not answer in time{upload} ({type(err).__name__}; "
                f"whoami may take {timeout:g} s, a later request {timeout:g} s to connect and "
                f"{timeout * STALL_FACTOR:g} s without a byte, an upload up to 6 tries of that; "
                f"NCAGEN_HUB_TIMEOUT sets these): check HF_ENDPOINT and the network, then {RESUME}"
            )
        return PublishFailed(
            f"could not reach the Hub at {where}{upload}: {type(err).__name__}: {_one_line(err)}; "
            f"check HF_ENDPOINT and the network, then {RESUME}"
        )
    if isinstance(err, OSError):  # reading the build or writing the staging copies
        return PublishFailed(f"publishing {name} failed: {_one_line(err)}; {RESUME}")
    return None


def hub_timeout() -> float:
    """Seconds the first Hub request may take: NCAGEN_HUB_TIMEOUT, else HUB_TIMEOUT."""
    from .cli import seconds_from_env

    return seconds_from_env("NCAGEN_HUB_TIMEOUT", HUB_TIMEOUT)


def _publish(
    build: Build,
    repo_id: str,
    branch: str,
    tag: str | None,
    private: bool,
    token: str | None,
    endpoint: str | None,
    files_per_batch: int,
    timeout: float,
) -> PublishReport:
    """The networked part of `publish`; Hub HTTP errors propagate to the caller."""
    from huggingface_hub import CommitOperationDelete, HfApi, get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(endpoint=endpoint, token=token, library_name="ncagen")
    _check_write_access(_whoami(api, token, timeout))

    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if branch != "main":
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
    url = repo_url(api.endpoint, repo_id, branch)

    # Plan against one commit and commit on top of exactly it: should the branch move meanwhile,
    # the Hub refuses the commit instead of deleting files this publish never saw.
    head = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
    remote = remote_files(api, repo_id, head or branch)
    to_upload, unchanged, stale = plan_publish(build, remote)
    logger.info(
        "%s: %d files to upload (%s), %d unchanged, %d to delete",
        build.name,
        len(to_upload),
        _human_bytes(sum(f.size for f in to_upload)),
        len(unchanged),
        len(stale),
    )
    tagged = tag is not None and _tag_in_place(api, repo_id, branch, tag, head, bool(to_upload or stale))
    commit = None
    if to_upload or stale:
        with tempfile.TemporaryDirectory(prefix="ncagen-publish-") as staging:  # object stores
            additions = _preupload(api, repo_id, branch, build, to_upload, staging, files_per_batch)
            deletions = [CommitOperationDelete(path_in_repo=path) for path in stale]
            info = api.create_commit(
                repo_id,
                [*additions, *deletions],
                commit_message=_commit_message(len(additions), len(deletions)),
                repo_type="dataset",
                revision=branch,
                parent_commit=head,
            )
        commit = info.oid
        logger.info(
            "commit %s: %d files added or changed, %d deleted",
            commit,
            len(additions),
            len(deletions),
        )
    if tag is not None and not tagged:
        target = commit or head
        if target is None:
            raise PublishError(f"{branch} of {repo_id} has no commit to tag")
        api.create_tag(repo_id, tag=tag, revision=target, repo_type="dataset")
        logger.info("tagged commit %s as %s", target, tag)
    return PublishReport(
        repo_id,
        branch,
        url,
        dry_run=False,
        uploaded=tuple(to_upload),
        unchanged=tuple(unchanged),
        deleted=tuple(stale),
        commit=commit,
        tag=tag,
        tag_created=tag is not None and not tagged,
        release=build.release,
    )


def _tag_in_place(
    api: HfApi, repo_id: str, branch: str, tag: str, head: str | None, will_commit: bool
) -> bool:
    """Whether `tag` already marks the commit the branch will hold; PublishError where it marks
    another (a tag never moves) or names a branch. Asked before anything is uploaded."""
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    if any(ref.name == tag for ref in refs.branches):
        raise PublishError(f"{tag!r} is a branch of {repo_id}; a tag needs a name of its own")
    marked = next((ref.target_commit for ref in refs.tags if ref.name == tag), None)
    if marked is None:
        return False
    if marked == head and not will_commit:
        return True
    raise PublishError(
        f"tag {tag!r} already exists on {repo_id} at commit {marked[:12]}, not at the commit "
        f"this publish leaves on {branch}; a tag never moves: publish under a new tag"
    )


def _preupload(
    api: HfApi,
    repo_id: str,
    branch: str,
    build: Build,
    files: list[DatasetFile],
    staging: str,
    files_per_batch: int,
) -> list[CommitOperationAdd]:
    """Send the LFS content of `files` to the Hub a batch at a time; the commit's additions."""
    from huggingface_hub import CommitOperationAdd

    additions = []
    batches = list(_batches(files, files_per_batch, STAGING_BYTES))
    for number, batch in enumerate(batches, start=1):
        ops = []
        for f in batch:
            path, sha256 = _local_copy(build, f, staging)
            op = CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=path)
            if sha256 is not None:  # known already: the client need not read the file for it
                op.upload_info.sha256 = bytes.fromhex(sha256)
            ops.append(op)
        api.preupload_lfs_files(repo_id, ops, repo_type="dataset", revision=branch)
        for f, op in zip(batch, ops):
            if not build.is_local and not isinstance(op.path_or_fileobj, str):
                # The Hub holds the content and the commit names it by hash: drop the copy.
                # Regular (small, non-LFS) files keep theirs until the commit sends them.
                os.remove(_staged_path(staging, f))
        additions += ops
        batch_bytes = _human_bytes(sum(f.size for f in batch))
        logger.info(
            "pre-uploaded batch %d/%d: %d files, %s", number, len(batches), len(batch), batch_bytes
        )
    return additions


def _batches(
    files: list[DatasetFile], max_files: int, max_bytes: int
) -> Iterator[list[DatasetFile]]:
    """Consecutive runs of at most `max_files` files and `max_bytes` (or one larger file)."""
    batch: list[DatasetFile] = []
    size = 0
    for f in files:
        if batch and (len(batch) == max_files or size + f.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield batch


def _local_copy(build: Build, f: DatasetFile, staging: str) -> tuple[str, str | None]:
    """(a local path holding the file, its SHA-256 where known): the file itself in a local
    build (a shard's checked by `check_content`), else a staged copy, hashed as it is written
    and refused (ValueError) where it is not what the manifest records."""
    if build.is_local:
        return build.location(f), f.sha256
    target = _staged_path(staging, f)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    digest = hashlib.sha256()
    with build.fsys.open_input_stream(build.location(f)) as source, open(target, "wb") as sink:
        while block := source.read(_HASH_BLOCK):
            digest.update(block)
            sink.write(block)
    if f.sha256 is not None and digest.hexdigest() != f.sha256:
        raise ValueError(
            f"{f.path} in {build.name} does not hold what {MANIFEST} records (the SHA-256 of "
            f"the copy staged for upload differs); {REBUILD}"
        )
    return target, digest.hexdigest()


def _staged_path(staging: str, f: DatasetFile) -> str:
    """Where the staged copy of a file of an object-store build lies."""
    return os.path.join(staging, *f.path.split("/"))


def _commit_message(added: int, deleted: int) -> str:
    """Summary line of the publish commit."""
    if not deleted:
        return f"Upload {added} files"
    gone = f"{deleted} files no longer in the build"
    return f"Upload {added} files, delete {gone}" if added else f"Delete {gone}"


def _network_errors() -> tuple[type[Exception], ...]:
    """Connection-level exceptions of the HTTP client that huggingface_hub runs on."""
    kinds: list[type[Exception]] = []
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x, 1.x
        try:
            kinds.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


_TIMEOUTS_LOCK = threading.Lock()
_timeouts_users = 0  # publishes in this process running inside _request_timeouts
_factory_before: tuple | None = None  # what the first of them changed, undone by the last


@contextlib.contextmanager
def _request_timeouts(timeout: float) -> Iterator[None]:
    """While publishing, every request of huggingface_hub's client that leaves a limit open
    (its own default, or `timeout=None` passed by the call) gives up after `timeout` seconds to
    connect and STALL_FACTOR times that without a byte sent or received. The limits go in by
    a request hook on every client huggingface_hub's factory makes, the one it remakes after a
    connection error included; the factory a user set (a proxy, certificates) keeps making
    them, and is put back when the last publish running in this process ends (publishes that
    overlap share the first one's limits)."""
    global _timeouts_users, _factory_before
    from huggingface_hub.utils import _http, get_session, set_client_factory

    limits = {"connect": timeout, "read": timeout * STALL_FACTOR,
              "write": timeout * STALL_FACTOR, "pool": timeout * STALL_FACTOR}

    def fill(request) -> None:
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            k: given[k] if given.get(k) is not None else v for k, v in limits.items()}

    def hooked(client):
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [*hooks.get("request", []), fill]}
        return client

    with _TIMEOUTS_LOCK:
        _timeouts_users += 1
        if _timeouts_users == 1:
            factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
            if factory is not None:
                _factory_before = ("factory", factory, fill)
                set_client_factory(lambda: hooked(factory()))
            else:  # a huggingface_hub without the attribute: the client it has now, at least
                _factory_before = ("client", hooked(get_session()), fill)
    try:
        yield
    finally:
        with _TIMEOUTS_LOCK:
            _timeouts_users -= 1
            if _timeouts_users == 0 and _factory_before is not None:
                kind, saved, hook = _factory_before
                if kind == "factory":
                    set_client_factory(saved)
                else:  # the client hooked in place: the hook goes
                    hooks = saved.event_hooks
                    saved.event_hooks = {
                        **hooks, "request": [h for h in hooks["request"] if h is not hook]}
                _factory_before = None


def _whoami(api: HfApi, token: str, timeout: float) -> dict:
    """The Hub's whoami for the token, waiting at most `timeout` seconds (HfApi.whoami takes no
    timeout, and the client's default is none: a Hub that never answers would hang publish)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    response = get_session().get(
        f"{api.endpoint}/api/whoami-v2",
        headers=build_hf_headers(token=token, library_name="ncagen"),
        timeout=timeout,
    )
    hf_raise_for_status(response)
    try:
        return response.json()
    except ValueError:  # some other web server
        raise PublishError(
            f"{redact(api.endpoint)} does not answer as the Hub does (its whoami is not JSON): "
            "check HF_ENDPOINT"
        ) from None


def _check_write_access(whoami: dict) -> None:
    """Refuse read-only tokens up front rather than after hashing and uploading."""
    role = ((whoami.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PublishError("the Hugging Face token is read-only; publishing needs a write token")


def _http_error(err: HfHubHTTPError) -> PublishError:
    """One line for a Hub HTTP error: rejected credentials and other 4xx answers are a refusal,
    5xx, 408 and 429 the Hub failing (PublishFailed)."""
    status = err.response.status_code if err.response is not None else None
    if status in (401, 403):
        return PublishError(
            f"the Hub rejected the token (HTTP {status}): "
            "check HF_TOKEN or `hf auth login`, and write access"
        )
    first_line = next(
        (line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__
    )
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        # the Hub refused what was asked (a bad name, a conflict): rerunning cannot help
        return PublishError(f"the Hub refused the request (HTTP {status}): {redact(first_line)}")
    return PublishFailed(f"Hub request failed (HTTP {status}): {redact(first_line)}; {RESUME}")


def _one_line(err: BaseException) -> str:
    """An exception as one line, without the credentials a URL in it may carry."""
    return redact(" ".join(str(err).split()) or type(err).__name__)


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
        lines = [
            f"dry run, Hub not contacted: {files} to publish; unchanged ones are skipped then, "
            "and dataset files on the Hub that the build lacks are deleted"
        ]
        lines += [f"  {f.path}  {_human_bytes(f.size)}" for f in report.uploaded]
    elif report.commit is None:
        lines = [f"up to date: the Hub already holds all {len(report.unchanged)} files"]
    else:
        deleted = f" and deleted {len(report.deleted)} stale files" if report.deleted else ""
        lines = [
            f"uploaded {files}{deleted} in one commit ({report.commit[:12]}), "
            f"skipped {len(report.unchanged)} unchanged"
        ]
        lines += [f"  deleted {path}" for path in report.deleted]
    lines.append(report.url)
    if report.tag is not None:
        pinned = f'load_dataset("{report.repo_id}", CONFIG, revision="{report.tag}")'
        if report.dry_run:
            lines.append(f"would tag that commit {report.tag}")
        elif report.tag_created:
            lines.append(f"tagged {report.tag}: load this release with {pinned}")
        else:
            lines.append(f"tag {report.tag} already marks it: load this release with {pinned}")
    if report.release is not None and report.tag != release_tag(report.release):
        pinned_tag = release_tag(report.release)  # what the card tells readers to pin
        lines.append(f"note: this build is release {report.release} and its card pins "
                     f"revision=\"{pinned_tag}\", which this publish "
                     f"{'would not create' if report.dry_run else 'did not create'}: "
                     f"publish with --tag {pinned_tag} for that")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    """Flags of `python -m ncagen.publish`."""
    from .cli import Parser  # usage errors are one line, exit status 2

    parser = Parser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "dir",
        metavar="DIR",
        help=f"build directory or URL, e.g. s3://bucket/prefix (holds {MANIFEST})",
    )
    parser.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub dataset repo id")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (if it does not exist)"
    )
    parser.add_argument(
        "--revision", metavar="BRANCH", help="branch to publish to, created if missing"
    )
    parser.add_argument(
        "--tag",
        metavar="TAG",
        help="also tag the commit the branch then holds, e.g. v1.0 (refused if it marks another)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the build (every shard against the manifest) and list what would be "
        "uploaded; the Hub is not contacted",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _no_bars_off_a_terminal() -> Iterator[None]:
    """No per-file progress bars of huggingface_hub while stderr is not a terminal (a CI log, a
    Ray job's log): redrawn bars there are lines of cursor codes; the batch lines still report
    progress. HF_HUB_DISABLE_PROGRESS_BARS, when set, decides instead."""
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                       enable_progress_bars)

    turn_off = (os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None
                and not _is_terminal(sys.stderr) and not are_progress_bars_disabled())
    # the groups a caller in this process set (disabling and enabling all clear them)
    states = getattr(importlib.import_module("huggingface_hub.utils.tqdm"),
                     "progress_bar_states", None)
    saved = dict(states) if turn_off and isinstance(states, dict) else None
    if turn_off:
        disable_progress_bars()
    try:
        yield
    finally:
        if saved is not None:
            states.clear()
            states.update(saved)
        elif turn_off:
            enable_progress_bars()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def main(argv: list[str] | None = None, prog: str = "python -m ncagen.publish") -> int:
    """CLI entry point; returns the exit status."""
    args = _parse_args(argv, prog)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)  # our progress lines, without the HTTP client's per-request ones
    try:
        _check_env_endpoint()
        with _no_bars_off_a_terminal():
            report = publish(
                args.dir,
                args.repo,
                private=args.private,
                revision=args.revision,
                tag=args.tag,
                dry_run=args.dry_run,
            )
    except PublishFailed as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except (ValueError, PublishError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
