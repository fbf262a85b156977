"""ray_cluster.yaml is a valid cluster-launcher config for the installed Ray, of the shape the
build expects: a CPU-only head and autoscaling GPU workers that install ncagen and compile its
code while they start."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray")
yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def config(repo_root) -> dict:
    return yaml.safe_load((repo_root / "ray_cluster.yaml").read_text())


def test_passes_rays_own_validation(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # with the AWS defaults filled in


def test_schema_rejects_a_misspelt_key(config):
    """The check above has teeth: the same schema refuses an unknown field."""
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        schema = json.load(f)
    jsonschema.validate(config, schema)
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cpu_head_autoscaling_gpu_workers_install_ncagen(config, repo_root):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert config["provider"]["type"] == "aws"
    assert head["resources"] == {"CPU": 0}  # shard tasks never land on the head
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn", "g5", "g6", "p3", "p4", "p5"))
    assert 0 <= gpu["min_workers"] < gpu["max_workers"] <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0
    assert "gpu" in config["docker"]["worker_image"]
    # the checkout is synced to every node and pip-installed there
    (remote, local), = config["file_mounts"].items()
    assert (repo_root / local / "pyproject.toml").exists()
    assert any("pip install" in c and remote in c for c in config["setup_commands"])
    # the GPU workers install the extra that brings torch (the CUDA engine); the head needs none
    assert any(f"{remote}[gpu]" in c for c in config["worker_setup_commands"])


def test_every_node_compiles_ncagen_after_installing_it(config, tmp_path):
    """The warm-up line runs as written: a one-row build that leaves nothing behind, after the
    install, and never stops a node (its failure is a note). What it buys, a job's copy of the
    code at another path loading the node's compiled code, is tests/test_jit.py's."""
    commands = config["setup_commands"]
    warm = [i for i, c in enumerate(commands) if "ncagen.build" in c]
    assert len(warm) == 1 and warm[0] > 0 and "pip install" in commands[warm[0] - 1]
    command = commands[warm[0]]
    assert "--executor local" in command and command.rstrip().split("||")[-1].strip().startswith("echo")
    temp = tmp_path / "tmp"
    temp.mkdir()
    # this machine's cache folder: the line's behaviour is under test here, not a cold compile
    env = {**os.environ, "TMPDIR": str(temp),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and res.stdout == res.stderr == "", (res.stdout, res.stderr)
    assert not list(temp.iterdir())  # the build and its log are gone
    # the same line with a build that fails (a refused --rows): one note, and the node goes on
    assert "--rows 1" in command
    res = subprocess.run(["bash", "-c", command.replace("--rows 1", "--rows 0")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.startswith("ncagen: compile warm-up failed"), res
    log, = temp.glob("*/log")  # kept for the note to point at
    assert "rows" in log.read_text()
