"""kuberay.yaml (the Kubernetes example): the properties its comments promise, checked offline."""
import shlex
from pathlib import Path

import ray
import yaml

from mmsearch.cli import build_parser

MANIFEST = yaml.safe_load((Path(__file__).parent.parent / "kuberay.yaml").read_text())


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_a_rayjob_for_this_ray_with_token_auth_and_nothing_exposed():
    assert MANIFEST["apiVersion"] == "ray.io/v1" and MANIFEST["kind"] == "RayJob"
    spec = MANIFEST["spec"]["rayClusterSpec"]
    assert spec["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2]
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    # the job is submitted from inside the head pod: its dashboard stays on localhost
    assert MANIFEST["spec"]["submissionMode"] == "SidecarMode"


def test_trial_drivers_get_slots_on_a_head_that_trains_nothing():
    params = MANIFEST["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert yaml.safe_load(yaml.safe_load(params["resources"]))["trial_slot"] >= 1


def test_the_entrypoint_is_a_valid_search_on_the_shared_volume():
    args = shlex.split(MANIFEST["spec"]["entrypoint"])
    assert args[:2] == ["mmsearch", "search"]
    parsed = build_parser().parse_args(args[1:])  # every flag exists
    assert parsed.address == "auto"
    mounts = [{m["mountPath"] for m in c["volumeMounts"]} for c in _containers(MANIFEST["spec"]["rayClusterSpec"])]
    shared = set.intersection(*mounts)
    assert shared, "every container mounts the shared volume at the same path"
    assert any(parsed.storage.startswith(m) and parsed.data.startswith(m) for m in shared)
