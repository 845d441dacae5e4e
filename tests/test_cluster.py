"""`ray job submit` to a real Ray head with token authentication, started by the test on 127.0.0.1.

The head is a separate Ray from the test session's (its own ports, temp dir and token); it runs
`ray start --head --block` in its own process group and is stopped by the fixture, also when a test fails.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this environment's `ray` and `python`
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
              "node-manager-port", "object-manager-port")  # fmt: skip


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def client_env(home: str, **auth) -> dict:
    """A client's environment: this venv first on PATH, an empty HOME (no ~/.ray/auth_token), `auth` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}", "HOME": home, **auth}


@pytest.fixture(scope="module")
def token_head():
    """A Ray head on 127.0.0.1 with RAY_AUTH_MODE=token: {"dashboard", "gcs", "token_env", "home", "dir"}."""
    work = tempfile.mkdtemp(prefix="rh-")  # short: Ray's socket paths must stay under 108 bytes
    token = os.path.join(work, "token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(secrets.token_hex(32))  # never printed
    os.makedirs(os.path.join(work, "home"))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token}
    ports = dict(zip(HEAD_PORTS, free_ports(len(HEAD_PORTS))))
    command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", "--num-cpus=2", '--resources={"raypkg_trial": 100}',
               f"--temp-dir={work}/ray", "--disable-usage-stats",
               *(f"--{name}={port}" for name, port in ports.items())]  # fmt: skip
    head = subprocess.Popen(command, env=client_env(os.path.join(work, "home"), **auth), start_new_session=True,
                            stdout=open(os.path.join(work, "head.log"), "w"), stderr=subprocess.STDOUT)  # fmt: skip
    info = {"dashboard": f"http://127.0.0.1:{ports['dashboard-port']}", "gcs": f"127.0.0.1:{ports['port']}",
            "token_env": auth, "home": os.path.join(work, "home"), "dir": work}  # fmt: skip
    try:
        wait_for_dashboard(head, info, work)
        yield info
    finally:
        stop_head(head)
        shutil.rmtree(work, ignore_errors=True)


def wait_for_dashboard(head: subprocess.Popen, info: dict, work: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited {head.returncode}: {Path(work, 'head.log').read_text()[-2000:]}")
        done = subprocess.run([str(BIN / "ray"), "job", "list", "--address", info["dashboard"]], capture_output=True,
                              env=client_env(info["home"], **info["token_env"]))  # fmt: skip
        if done.returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"the head's job API did not come up in {timeout:.0f} s")


def stop_head(head: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` group (it stops what it started), then SIGKILL whatever is left of it."""
    try:
        family = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with_suppress(os.killpg, head.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=10)
    for process in alive:
        with_suppress(process.kill)
    head.wait(timeout=30)


def with_suppress(fn, *args) -> None:
    try:
        fn(*args)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


def submit(info: dict, env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "ray"), "job", "submit", "--address", info["dashboard"], "--working-dir", ".",
               "--runtime-env", "jobs/runtime_env.yaml", "--", *entrypoint]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_job_submit_runs_the_tutorial_study_on_a_token_auth_head(token_head, tmp_path):
    done = submit(token_head, client_env(token_head["home"], **token_head["token_env"]),
                  "python", "jobs/sweep.py", "--study", "jobs/studies/tutorial.toml", "--arms", "tiny,large",
                  "--max-epochs", "3", "--n-validation", "500", "--train-sizes", "2000", "--n-test", "500",
                  "--storage", str(tmp_path), "--name", "tutorial-job")  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    port = token_head["gcs"].split(":")[1]
    assert re.search(rf"ray: connecting to the cluster at \S+:{port}\n", out)  # the job's RAY_ADDRESS, no new Ray
    shipped = out.split("raypkg 0.1.0 from ")[1].splitlines()[0]
    assert "/runtime_resources/working_dir_files/" in shipped  # the runtime env's copy, not this checkout
    run_dir = tmp_path / "tutorial-job"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(t["trial"], t["status"], t["epochs"]) for t in summary["trials"]] == [
        ("tiny-n2000-s0", "done", 3), ("large-n2000-s0", "done", 3)]  # fmt: skip
    assert (run_dir / "report" / "report.md").exists() and (run_dir / "tables" / "trials.csv").exists()


def test_a_job_without_storage_is_refused_before_it_trains(token_head):
    done = submit(token_head, client_env(token_head["home"], **token_head["token_env"]),
                  "python", "jobs/sweep.py", "--arms", "tiny", "--max-epochs", "1")  # fmt: skip
    assert done.returncode != 0
    assert "error: give --storage or set RAYPKG_STORAGE" in done.stdout + done.stderr


def test_storage_comes_from_the_environment(token_head, tmp_path):
    env = client_env(token_head["home"], **token_head["token_env"])
    done = submit(token_head, env, "env", f"RAYPKG_STORAGE={tmp_path}", "python", "jobs/sweep.py", "--arms", "tiny",
                  "--max-epochs", "1", "--name", "env-storage")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = json.loads((tmp_path / "env-storage" / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["done"]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_the_head_refuses_a_job_without_its_token(token_head, tmp_path, token):
    auth = {}
    if token:
        (tmp_path / "token").write_text(secrets.token_hex(32))
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")}
    marker = tmp_path / "ran"
    done = submit(token_head, client_env(str(tmp_path), **auth), "touch", str(marker))
    assert done.returncode != 0
    expected = "Invalid authentication token" if token else "Missing authentication token"
    assert expected in done.stdout + done.stderr
    assert not marker.exists()


def test_raypkg_without_the_token_says_so_in_one_line(token_head, tmp_path):
    env = client_env(str(tmp_path))
    done = subprocess.run([str(BIN / "raypkg"), "sweep", "--address", token_head["gcs"], "--arms", "tiny",
                           "--storage", str(tmp_path), "--name", "refused"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "wants its token: set RAY_AUTH_MODE=token" in error and "Traceback" not in done.stderr
    assert not (tmp_path / "refused").exists()


# --- cluster configs: checked against the schemas Ray and KubeRay define -------------------------------


def load_yaml(path: Path = ROOT / "cluster" / "aws-gpu.yaml") -> dict:
    """A config file as data; the cluster-launcher YAML unless told."""
    import yaml

    return yaml.safe_load(path.read_text())


def validate_launcher(config: dict) -> dict:
    """What `ray up` does before it launches anything: defaults filled in, then Ray's JSON schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def test_cluster_launcher_yaml_passes_rays_schema():
    prepared = validate_launcher(load_yaml())
    assert prepared["docker"]["image"] == f"rayproject/ray:{ray_version()}-py311-gpu"
    workers = prepared["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1  # autoscaling GPU nodes


def test_cluster_launcher_yaml_with_a_misspelt_field_fails_the_schema():
    import jsonschema

    config = load_yaml()
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_launcher(config)


def test_cluster_launcher_keeps_auth_on_and_the_dashboard_private():
    config = load_yaml()
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head
    assert config["file_mounts"]["/home/ray/.ray/auth_token"].startswith("~/")  # from the user's machine, not the repo


def ray_version() -> str:
    import ray

    return ray.__version__


def strict(properties: dict, required: tuple = ()) -> dict:
    """A JSON-schema object that takes these fields and no others: a misspelt field fails."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITIES = {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}
CONTAINER = strict({
    "name": {"type": "string"}, "image": {"type": "string"}, "env": {"type": "array"},
    "resources": strict({"requests": QUANTITIES, "limits": QUANTITIES}),
    "ports": {"type": "array", "items": strict({"containerPort": {"type": "integer"}, "name": {"type": "string"}},
                                               ("containerPort",))},
    "volumeMounts": {"type": "array", "items": strict({"name": {"type": "string"}, "mountPath": {"type": "string"}},
                                                      ("name", "mountPath"))},
}, ("name", "image"))  # fmt: skip
POD_TEMPLATE = strict({"spec": strict({
    "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
    "volumes": {"type": "array"}, "tolerations": {"type": "array"}, "nodeSelector": STRINGS,
}, ("containers",))}, ("spec",))  # fmt: skip
RAY_CLUSTER_SPEC = strict({  # KubeRay's RayClusterSpec, the fields of its API reference that we use
    "rayVersion": {"type": "string"},
    "authOptions": strict({"mode": {"enum": ["disabled", "token"]}, "secretName": {"type": "string"}}),
    "enableInTreeAutoscaling": {"type": "boolean"},
    "autoscalerOptions": strict({"idleTimeoutSeconds": {"type": "integer"},
                                 "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]}}),
    "headGroupSpec": strict({"serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                             "rayStartParams": STRINGS, "template": POD_TEMPLATE}, ("template",)),
    "workerGroupSpecs": {"type": "array", "items": strict({
        "groupName": {"type": "string"}, "replicas": {"type": "integer"}, "minReplicas": {"type": "integer"},
        "maxReplicas": {"type": "integer"}, "rayStartParams": STRINGS, "template": POD_TEMPLATE,
    }, ("groupName", "template"))},
}, ("headGroupSpec",))  # fmt: skip
KUBERAY = {
    "RayCluster": RAY_CLUSTER_SPEC,
    "RayJob": strict({
        "entrypoint": {"type": "string"}, "runtimeEnvYAML": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "shutdownAfterJobFinishes": {"type": "boolean"}, "ttlSecondsAfterFinished": {"type": "integer"},
        "activeDeadlineSeconds": {"type": "integer"}, "rayClusterSpec": RAY_CLUSTER_SPEC,
    }, ("entrypoint", "rayClusterSpec")),
}  # fmt: skip


def validate_kuberay(doc: dict) -> None:
    import jsonschema

    jsonschema.validate(doc, strict({
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"enum": list(KUBERAY)},
        "metadata": {"type": "object", "required": ["name"]}, "spec": KUBERAY[doc.get("kind", "RayCluster")],
    }, ("apiVersion", "kind", "metadata", "spec")))  # fmt: skip


@pytest.mark.parametrize("name, kind", [("raycluster", "RayCluster"), ("rayjob", "RayJob")])
def test_kuberay_manifests_pass_the_schema_with_auth_on_and_no_public_service(name, kind):
    doc = load_yaml(ROOT / "cluster" / "kuberay" / f"{name}.yaml")
    validate_kuberay(doc)
    spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert doc["kind"] == kind and spec["authOptions"] == {"mode": "token"}
    assert spec["rayVersion"] == ray_version() and spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    groups = spec["workerGroupSpecs"]
    assert all(c["resources"]["limits"].get("nvidia.com/gpu") for g in groups for c in g["template"]["spec"]["containers"])
    if kind == "RayJob":
        entry = doc["spec"]["entrypoint"].split()
        assert entry[:2] == ["python", "/home/ray/raypkg/jobs/sweep.py"] and "--storage" in entry
        assert (ROOT / entry[entry.index("--study") + 1].removeprefix("/home/ray/raypkg/")).exists()


def test_kuberay_schema_catches_a_misspelt_field():
    import jsonschema

    doc = load_yaml(ROOT / "cluster" / "kuberay" / "raycluster.yaml")
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = doc["spec"]["workerGroupSpecs"][0].pop("maxReplicas")
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        validate_kuberay(doc)


def test_the_image_and_the_launcher_pin_the_tested_versions():
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray_version()}-py311-gpu" in dockerfile
    assert '"/home/ray/raypkg[gpu]"' in dockerfile  # pyproject.toml's pins, plus CUDA wheels for TF
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[train,tune,default]=={ray_version()}"' in pyproject
