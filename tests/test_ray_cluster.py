"""Two containers of a CI image form a Ray cluster: the multi-node path of `-tp`/`-pp` across Sparks.

vLLM spreads a model over several machines through Ray: a head node started in one container, a
worker in another, each on its own machine. Here the two containers share the host's network
namespace (the CI engine has no default bridge, and the test must only use loopback addresses) and
each Ray node takes its own loopback address (head 127.0.0.2, worker 127.0.0.3) and its own port
ranges, so each is addressed exactly as a second machine would be. The image is the CI release with
Ray pinned (tests/releases/ci-ray.toml), built by `wheelfactory images` from the session's CI
wheelhouse like every other image.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib

import pytest
from click.testing import CliRunner

from assemble.cli import images
from assemble.docker import Docker
from wheelfactory.pipeline.factory import Factory

from .conftest import CI_RELEASES, RECIPES, docker_or_skip, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]
IMAGE = "wheelfactory-ci/vllm-ray:0.14.1-t4"
HEAD, WORKER = "wf-ray-head", "wf-ray-worker"
# Not 127.0.0.1: Ray replaces that address (and "localhost") with the machine's first interface
# address (ray._private.services.resolve_ip_for_localhost), which is not a loopback address.
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
GCS_PORT = 6391  # not Ray's default 6379: a Redis or another Ray on the machine must not answer
# Each node its own ports: both raylets share one network namespace (see the module docstring).
NODE_ARGS = {
    HEAD: ["--head", f"--node-ip-address={HEAD_IP}", f"--port={GCS_PORT}", "--include-dashboard=false",
           "--dashboard-agent-listen-port=52401", "--min-worker-port=20000", "--max-worker-port=20999",
           "--resources", '{"head_node": 1}'],
    WORKER: [f"--address={HEAD_IP}:{GCS_PORT}", f"--node-ip-address={WORKER_IP}",
             "--dashboard-agent-listen-port=52402", "--min-worker-port=21000", "--max-worker-port=21999",
             "--resources", '{"second_node": 1}'],
}

# Run on the head: the cluster as Ray sees it, and one task that can only be placed on the worker
# (it asks for the resource only the worker has) reporting where it ran.
PROBE = """
import json, ray, sys
ray.init(address="auto", logging_level="ERROR")
nodes = [n for n in ray.nodes() if n["Alive"]]
@ray.remote(num_cpus=0, resources={"second_node": 1})
def where():
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
node_id, ip = ray.get(where.remote(), timeout=120)
print(json.dumps({"alive": sorted(n["NodeManagerAddress"] for n in nodes), "task_node_ip": ip,
                  "task_node_id": node_id,
                  "worker_node_id": [n["NodeID"] for n in nodes if n["NodeManagerAddress"] == sys.argv[1]][0]}))
"""


def _docker(docker: Docker, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker.binary, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def docker() -> Docker:
    return docker_or_skip()


@pytest.fixture(scope="module")
def ray_image(docker: Docker, ci_wheelhouse, tmp_path_factory: pytest.TempPathFactory):
    """The ci-ray image, locked from the session's CI wheelhouse and built by `images`; removed after."""
    wh, cache = ci_wheelhouse
    release = str(CI_RELEASES / "ci-ray.toml")
    r = run_cli("--wheelhouse", str(wh), "--cache-dir", str(cache), "lock", "-r", release)
    assert r.returncode == 0, f"lock of ci-ray failed:\n{r.stdout}\n{r.stderr}"
    out = tmp_path_factory.mktemp("ray-images")
    result = CliRunner().invoke(images, ["-r", release, "--output-dir", str(out)], obj=Factory(RECIPES, wh, cache))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    yield IMAGE
    _docker(docker, "rm", "-f", HEAD, WORKER)
    _docker(docker, "rmi", "-f", IMAGE)
    if os.environ.get("WHEELFACTORY_TEST_PRUNE_BUILD_CACHE"):
        _docker(docker, "builder", "prune", "-af")


def _start(docker: Docker, name: str, image: str) -> None:
    _docker(docker, "rm", "-f", name)
    r = _docker(docker, "run", "-d", "--name", name, "--network", "host", "--shm-size", "256m", image,
                "ray", "start", "--block", "--num-cpus=1", "--object-store-memory=100000000",
                "--disable-usage-stats", *NODE_ARGS[name])
    assert r.returncode == 0, f"docker run {name} failed: {r.stderr}"


def _until(check, what: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return last
        time.sleep(2)
    pytest.fail(f"{what} within {timeout_s:.0f}s; last: {last}")


def _logs(docker: Docker) -> str:
    return "\n".join(f"--- {n}:\n{_docker(docker, 'logs', '--tail', '30', n).stdout}"
                     f"{_docker(docker, 'logs', '--tail', '30', n).stderr}" for n in (HEAD, WORKER))


@pytest.fixture(scope="module")
def cluster(docker: Docker, ray_image: str):
    """A head container and a worker container, started and joined; the head's `ray status`."""
    _start(docker, HEAD, ray_image)

    def head_up():
        r = _docker(docker, "exec", HEAD, "ray", "status", f"--address={HEAD_IP}:{GCS_PORT}", timeout=60)
        return r.returncode == 0, r.stdout + r.stderr
    _until(head_up, f"the Ray head did not answer `ray status`\n{_logs(docker)}")

    _start(docker, WORKER, ray_image)

    def two_nodes():
        r = _docker(docker, "exec", HEAD, "ray", "status", f"--address={HEAD_IP}:{GCS_PORT}", timeout=60)
        active = r.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return active.count(" node_") == 2, r.stdout + r.stderr
    status = _until(two_nodes, f"`ray status` did not show 2 active nodes\n{_logs(docker)}")
    yield status
    _docker(docker, "rm", "-f", HEAD, WORKER)


def test_ray_status_shows_two_nodes(cluster: str) -> None:
    active = cluster.split("Active:", 1)[1].split("Pending:", 1)[0]
    assert active.count(" node_") == 2, cluster
    assert "2.0 CPU" in cluster.replace("/", " "), cluster  # one CPU from each node, both counted


def test_a_remote_task_runs_on_the_second_container(docker: Docker, cluster: str) -> None:
    r = _docker(docker, "exec", HEAD, "python3", "-c", PROBE, WORKER_IP, timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{_logs(docker)}"
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["alive"] == [HEAD_IP, WORKER_IP]
    assert seen["task_node_ip"] == WORKER_IP
    assert seen["task_node_id"] == seen["worker_node_id"]


def test_the_image_carries_the_pinned_ray(docker: Docker, ray_image: str) -> None:
    pinned = tomllib.loads((CI_RELEASES / "ci-ray.toml").read_text())["pins"]["ray"]
    r = _docker(docker, "run", "--rm", "--network", "none", ray_image, "python3", "-c",
                "import ray; print(ray.__version__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pinned
