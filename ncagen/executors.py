"""Where the shards run: one after another in this process, or as Ray tasks on a cluster.

An executor is set up before anything is written, so what it finds out (no GPU can be had, a
local --out on a cluster of several nodes) is an input error and costs nothing. It then runs
the shards it is given, calling `on_running(task, rows_so_far)` as rows are made and
`on_result(task, record)` as shards finish.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from .config import ConfigError
from .extras import installed, missing
from .plan import BuildConfig, ShardTask
from .worker import DeviceError, pick_device, run_shard

MAX_RETRIES = 4  # Ray reruns a shard whose worker process or node died this many times
POLL_SECONDS = 1.0  # how often the driver collects the workers' running row counts
WIDEN_SECONDS = 0.25  # how often a shard of a private Ray asks whether it may use idle cores


class LocalExecutor:
    """Every shard in this process, in plan order."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.device = "cpu"

    def setup(self, todo: int) -> None:
        """auto: CUDA where it is visible (and torch installed), else the CPU; cuda: CUDA, or
        DeviceError (no GPU) or MissingExtra (no torch)."""
        self.device = pick_device(self.cfg.device, fallback=False)

    def run(self, tasks: list[ShardTask], on_running, on_result) -> None:
        """Shards one after another. On an object store a finished shard is uploaded and
        recorded (`on_result`) on one other thread, in plan order, while the next one is made."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="ncagen-upload") as uploads:
            pending = []
            try:
                for task in tasks:
                    report = lambda rows, t=task: on_running(t, rows)  # noqa: E731
                    publish = run_shard(task, self.cfg.out, self.device, self.cfg.batch,
                                        report=report, defer=True)
                    pending.append(uploads.submit(lambda t=task, p=publish: on_result(t, p())))
                    while pending and pending[0].done():
                        pending.pop(0).result()  # raises what the upload raised
                for future in pending:
                    future.result()
            finally:
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        pass


def ray_init_kwargs(cfg: BuildConfig) -> dict:
    """ray.init arguments: join --address / RAY_ADDRESS, else start a private local Ray."""
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    common = {"configure_logging": False, "log_to_driver": True}
    if address is not None:
        return {"address": address, **common}
    # "local" starts a fresh instance even when a `ray start` cluster runs on this machine; the
    # object store only carries task arguments and results (shards go straight to storage).
    return {"address": "local", "include_dashboard": False,
            "object_store_memory": 200 * 2**20, **common}


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """ConfigError now when nothing answers at a HOST:PORT address (ray.init would retry for
    minutes); "auto" and ray:// or http:// addresses are left to Ray, which fails fast on them."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except ValueError:
        raise ConfigError(f"Ray address {address} (--address or RAY_ADDRESS): not HOST:PORT") from None
    except OSError as err:
        raise ConfigError(f"Ray address {address} (--address or RAY_ADDRESS): no Ray cluster answers there ({err.strerror or err}); "
                          f"start one (ray start --head) or fix the address") from None


def cluster_view(nodes: list[dict], max_resources: dict | None) -> dict:
    """What the build needs to know of a cluster: its nodes now and what it can grow to."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    return {
        "nodes": len(alive),
        "gpus": sum(r.get("GPU", 0) for r in alive),
        "cpus": [int(r.get("CPU", 0)) for r in alive],
        "can_grow": max_resources is not None,  # an autoscaler config is published
        "max_gpus": (max_resources or {}).get("GPU", 0),
    }


def task_options(cfg: BuildConfig, view: dict, todo: int, private: bool,
                 gpu_engine: bool) -> tuple[dict, str, bool]:
    """Ray options of one shard task, the device it asks for, and whether a CUDA request may
    fall back to the CPU where none is visible. Raises DeviceError when no GPU can be had;
    without `gpu_engine` (no torch) auto builds on CPUs.

    GPU tasks reserve one GPU and one CPU, and size their threads on their node (the node's
    CPUs per GPU); CPU tasks reserve cores / --workers CPUs each, else one per task, or more when
    there are fewer shards to build than cores.
    """
    can_get_gpu = gpu_engine and (view["gpus"] > 0 or view["max_gpus"] > 0)
    explicit = cfg.device.startswith("cuda")
    if explicit and not can_get_gpu:
        where = "this machine" if private else "the Ray cluster"
        grow = "" if private else " and its autoscaler can add none"
        raise DeviceError(f"--device {cfg.device}: {where} has no GPU{grow}; "
                          f"use --device cpu or auto")
    if explicit or (cfg.device == "auto" and can_get_gpu):
        return {"num_gpus": 1, "num_cpus": 1}, "cuda", not explicit
    total, biggest = sum(view["cpus"]), max(view["cpus"], default=1)
    per = max(1, min(total // (cfg.workers or max(todo, 1)), biggest))
    # No runtime_env for the thread caps: a task with one waits for a fresh worker process
    # (about 0.9 s on 2 cores) where the ones Ray started beside it are idle; the task caps
    # its threads itself (`_ray_shard`).
    return {"num_cpus": per}, "cpu", False


class RayExecutor:
    """Shards as Ray tasks; Ray itself reruns a task whose worker or node died."""

    def __init__(self, cfg: BuildConfig):
        self.cfg, self.started, self.opts, self.device, self.fallback = cfg, False, {}, "cpu", False
        self.out = cfg.out if "://" in cfg.out else os.path.abspath(cfg.out)  # jobs run elsewhere
        self.view: dict = {}
        self.private = False  # a Ray of our own (started by setup), not a cluster we joined

    def setup(self, todo: int) -> None:
        """Start or join Ray; check the cluster against the build (nothing is written yet)."""
        import ray

        init = ray_init_kwargs(self.cfg)
        private = self.private = init["address"] == "local"
        # a private Ray runs every task here, in this Python: without torch it has the CPU engine
        # only (on a cluster the GPU nodes need torch, the driver does not)
        gpu_engine = not private or installed("torch")
        if not gpu_engine and self.cfg.device.startswith("cuda"):
            raise missing("torch", "gpu", f"--device {self.cfg.device} (the torch engine)")
        if private:
            _private_token()
        else:
            check_reachable(init["address"])
        if not ray.is_initialized():
            with _quiet_token_notice(private):
                ray.init(**init)
            self.started = True
        self.view = cluster_view(ray.nodes(), None if private else _max_resources())
        self.check_storage()
        self.opts, self.device, self.fallback = task_options(self.cfg, self.view, todo, private,
                                                               gpu_engine)
        if self.cfg.device == "auto" and self.device == "cpu" and not private:
            print("[ncagen] no GPU node is up and the cluster cannot add one: building on CPUs "
                  "(--device cuda waits for GPU nodes an autoscaler adds)", file=sys.stderr)

    def check_storage(self) -> None:
        """A local --out on a cluster of several nodes would scatter shards over their disks."""
        from .storage import is_url

        several = self.view["nodes"] > 1 or self.view["can_grow"]
        if several and not is_url(self.cfg.out) and not self.cfg.shared_fs:
            raise ConfigError(
                f"--out {self.cfg.out} is a local path, but the Ray cluster has "
                f"{'several nodes' if self.view['nodes'] > 1 else 'an autoscaler that adds nodes'}: "
                f"each would write shards to its own disk. Use object storage "
                f"(--out s3://bucket/prefix), or add --shared-fs if {self.cfg.out} is a shared "
                f"filesystem (NFS) mounted at the same path on every node")

    def run(self, tasks: list[ShardTask], on_running, on_result) -> None:
        import ray

        tally = _tally_class().options(num_cpus=0).remote()
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_ray_shard)
        remote = remote.options(**self.opts)
        tally.expect.remote(len(tasks))
        widen = self.private and self.device == "cpu"  # our own Ray: nobody else's cores
        pending = {remote.remote(t, self.out, self.device, self.cfg.batch, tally,
                                 self.fallback, widen): t for t in tasks}
        refs = list(pending)
        try:
            while refs:
                ready, refs = ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    task = pending.pop(ref)
                    on_result(task, ray.get(ref))
                running = ray.get(tally.snapshot.remote())
                for task in pending.values():
                    if task.path in running:
                        on_running(task, running[task.path])
        except BaseException:
            _record_finished(pending, on_result)  # shards that finished beside the failure
            for ref in pending:
                ray.cancel(ref, force=True)
            if pending:  # until the cancelled workers are gone, so their temp files can go too
                ray.wait(list(pending), num_returns=len(pending), timeout=10)
            raise
        finally:
            ray.kill(tally)

    def close(self) -> None:
        import ray

        if self.started:  # once: the build may close it early, beside the card
            self.started = False
            if self.private:
                _stop_monitor()
            ray.shutdown()


def _stop_monitor() -> None:
    """Stop a private Ray's autoscaler monitor before the rest of it (it has nothing to scale).

    ray.shutdown stops the monitor after the GCS: sent SIGTERM, the monitor tries to report its
    own end to the GCS that is already gone, and is killed a second later (measured: 1.0 of the
    1.35 s ray.shutdown takes). Killed first, it goes at once and reports nothing. Best effort:
    on a Ray without this hook the ordinary shutdown does it.
    """
    import ray

    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    kill = getattr(node, "kill_monitor", None)
    if kill is not None:
        try:
            kill(check_alive=False)  # SIGKILL, then reap it
        except Exception:  # noqa: BLE001 (ray.shutdown stops it anyway)
            pass


def _record_finished(pending: dict, on_result) -> None:
    """Record the shards of `pending` whose tasks already returned, best effort: the build is
    failing, and a shard written but not recorded would cost its resume a re-read (a shard that
    finishes while the others are cancelled is still adopted then). Stops at the first record
    that cannot be written: the failure may be the storage itself, and retrying it for every
    shard would only delay the error."""
    import ray

    try:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
    except Exception:
        return
    for ref in ready:
        try:
            record = ray.get(ref, timeout=0)
        except Exception:  # this task failed (maybe the failure itself): nothing to record
            continue
        try:
            on_result(pending.pop(ref), record)
        except Exception:
            return


def _private_token() -> None:
    """Give a private Ray a token of its own, unless the user set up token auth already.

    Left alone, Ray >= 2.60 makes a token for a new local cluster and saves it in
    ~/.ray/auth_token; from then on every `ray start` on this machine turns token auth on and a
    plain `ray job submit` is refused. A token in the environment is used instead and saved
    nowhere (Ray reads RAY_AUTH_TOKEN first); the workers of this private Ray inherit it.
    """
    import pathlib
    import secrets

    if any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return
    if (pathlib.Path.home() / ".ray" / "auth_token").exists():
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"  # Ray's own words


@contextlib.contextmanager
def _quiet_token_notice(private: bool):
    """For a private Ray (with `_private_token`'s token), leave out Ray's notice that token
    authentication is on: it is the safe default, the cluster lives only as long as the build,
    and the line came before every build's output and error. Ray's warning that a cluster has
    no token authentication, and everything else it logs, still shows."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TOKEN_NOTICE)

    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if private:
        log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _max_resources() -> dict | None:
    """The most resources the cluster's autoscaler may provide, or None without an autoscaler."""
    try:
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config()
    except Exception:  # a private API: without it, assume a fixed cluster
        return None


def _ray_shard(task: ShardTask, out: str, device: str, batch, tally, fallback: bool,
               widen: bool) -> dict:
    """The Ray task: one shard, reporting its running row count to the driver's tally."""
    import ray

    from .threads import limit_threads

    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources()
    if not cpus.get("GPU"):  # a CPU task's threads: its CPUs (a GPU task sizes its own)
        limit_threads(max(1, int(cpus.get("CPU", 1))))
    node = ctx.get_node_id()
    send = lambda rows: tally.set.remote(task.path, rows)  # noqa: E731  (fire and forget)
    tally.start.remote(task.path, node)  # a retried shard starts again from zero
    width = Widener(tally, node) if widen else None
    try:
        return run_shard(task, out, device, batch, report=send, fallback=fallback, in_ray=True,
                         width=width)
    finally:
        tally.finish.remote(task.path)


class Widener:
    """A shard's `width()`: the cores it may use now. Once no shard of the build waits for a
    core, the shards still running on a node share all its CPUs (the tail of a build would
    otherwise leave cores idle). Every WIDEN_SECONDS at most, from its first call on, it takes
    the tally's last answer if it came and asks again (only a private Ray widens, so the tally
    hears from one machine's shards); otherwise it answers from memory and never blocks. (A
    non-blocking ray.wait on every call instead cost a 2-core build about 15%.)"""

    def __init__(self, tally, node: str):
        import ray

        res = next((n.get("Resources", {}) for n in ray.nodes() if n.get("NodeID") == node), {})
        self.tally, self.node, self.cpus = tally, node, int(res.get("CPU", 1))
        self.value, self.ref, self.asked = 1, None, time.monotonic() - WIDEN_SECONDS

    def __call__(self) -> int:
        import ray

        now = time.monotonic()
        if now - self.asked < WIDEN_SECONDS:  # generate asks often: answer from memory
            return self.value
        self.asked = now
        if self.ref is not None and ray.wait([self.ref], timeout=0)[0]:
            self.value, self.ref = max(self.value, ray.get(self.ref)), None
        if self.ref is None:
            self.ref = self.tally.width.remote(self.node, self.cpus)
        return self.value


def _tally_class():
    import ray

    @ray.remote
    class Tally:
        """Running row counts of unfinished shards, written by workers, read by the driver;
        and which shards run where, so the last ones can take the cores the others left."""

        def __init__(self):
            self.rows: dict[str, int] = {}
            self.expected, self.started, self.running = 0, set(), {}

        def expect(self, shards: int) -> None:
            self.expected = shards

        def start(self, path: str, node: str) -> None:
            self.rows[path] = 0
            self.started.add(path)
            self.running[path] = node

        def finish(self, path: str) -> None:
            self.running.pop(path, None)

        def set(self, path: str, rows: int) -> None:
            self.rows[path] = rows

        def snapshot(self) -> dict:
            return dict(self.rows)

        def width(self, node: str, cpus: int) -> int:
            """CPUs per running shard of `node` once every shard has started, else 1."""
            if len(self.started) < self.expected:
                return 1
            here = sum(1 for n in self.running.values() if n == node)
            return max(1, cpus // max(here, 1))

    return Tally


def executor(cfg: BuildConfig):
    """The executor --executor names."""
    return RayExecutor(cfg) if cfg.executor == "ray" else LocalExecutor(cfg)
