"""Shared fixtures: the repository root, and the stand-in Hub (tests/hub_server.py) for the
modules that publish."""

import contextlib
import importlib
import os
import pathlib
import secrets
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return ROOT


from hub_server import HubServer  # noqa: E402  (tests/ is on sys.path from here)


@pytest.fixture
def kernel_cache(tmp_path) -> pathlib.Path:
    """An empty NCAGEN_CACHE_DIR for the generated kernels, holding a copy of this machine's
    compiled numba code (ncagen.jit), which these tests do not look at: they pay one kernel's
    compile, not every function's."""
    import shutil

    import numba

    from ncagen.fingerprint import fingerprint
    from ncagen.jit import cache_dir

    cache = tmp_path / "kernel-cache"
    current = f"{fingerprint()}-{numba.__version__}"  # this code's folder, not older ones
    compiled = cache_dir() / "numba" / current
    if compiled.is_dir():
        shutil.copytree(compiled, cache / "numba" / current)
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture
def token() -> str:
    return "hf_" + secrets.token_urlsafe(24)


@pytest.fixture
def hub(token, tmp_path, monkeypatch):
    """A running stand-in Hub, huggingface_hub pointed at it and cut off from any real login."""
    home = tmp_path / "hf_home"
    home.mkdir()
    with serving_hub(token, home, monkeypatch) as server:
        yield server


@pytest.fixture(scope="module")
def module_hub(tmp_path_factory):
    """The same for a whole module (one token, one server), for tests that share a publish."""
    home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        with serving_hub("hf_" + secrets.token_urlsafe(24), home, mp) as server:
            yield server


@contextlib.contextmanager
def serving_hub(token: str, home: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    """Run a HubServer with the environment and huggingface_hub constants pointed at it."""
    from huggingface_hub import constants

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
        for name, folder in (("HF_HUB_CACHE", "hub"), ("HF_ASSETS_CACHE", "assets"),
                             ("HF_XET_CACHE", "xet")):  # downloads stay in the test's home
            monkeypatch.setattr(constants, name, str(home / folder))
        # The stand-in speaks the LFS batch API, not Xet.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        # The bars' module copies the switch when it is first imported (lazily): imported
        # after the patch, it kept True for the rest of the session. Patch both copies.
        bars_module = importlib.import_module("huggingface_hub.utils.tqdm")
        switches = [(owner, owner.HF_HUB_DISABLE_PROGRESS_BARS) for owner in (constants, bars_module)]
        for owner, _ in switches:
            monkeypatch.setattr(owner, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        disable_progress_bars()  # the switch is process-wide state that other tests may flip
        try:
            yield server
        finally:
            for owner, value in switches:  # first: enabling under True only warns
                monkeypatch.setattr(owner, "HF_HUB_DISABLE_PROGRESS_BARS", value)
            enable_progress_bars()
