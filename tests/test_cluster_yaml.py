"""cluster.yaml passes Ray's own autoscaler schema check (offline: nothing is launched), and holds
the security properties the README promises: token authentication on every node, the dashboard
on 127.0.0.1 only, nothing but SSH open to the world, runs/ and .venv kept on this machine."""
import re
from pathlib import Path

import pytest
import yaml

TEXT = (Path(__file__).parent.parent / "cluster.yaml").read_text()
CONFIG = yaml.safe_load(TEXT)


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(CONFIG))
    head = CONFIG["available_node_types"][CONFIG["head_node_type"]]
    assert head["resources"]["trial_slot"] >= 1  # trial drivers are placed by this resource


def _ray_starts(key: str) -> list[str]:
    return [c for c in CONFIG[key] if re.search(r"\bray start\b", c)]


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_every_node_starts_ray_with_token_auth(key):
    starts = _ray_starts(key)
    assert starts and all("RAY_AUTH_MODE=token" in c for c in starts)


def test_the_token_is_shipped_to_every_node_and_shells_use_it():
    assert CONFIG["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # file_mounts reach head and workers
    setup = CONFIG["setup_commands"]
    assert any("chmod 600 ~/.ray/auth_token" in c for c in setup)
    assert any("export RAY_AUTH_MODE=token" in c for c in setup)  # mmsearch --address auto, ray job submit
    assert "RAY_AUTH_MODE=disabled" not in TEXT


def test_the_dashboard_binds_to_localhost_only():
    (head,) = _ray_starts("head_start_ray_commands")
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head)
    assert "0.0.0.0" not in " ".join(CONFIG["head_start_ray_commands"] + CONFIG["worker_start_ray_commands"])
    assert "ray dashboard cluster.yaml" in TEXT  # how to reach it: an SSH tunnel


def test_nothing_but_ssh_is_opened_to_the_world_and_the_range_is_documented():
    rules = CONFIG["provider"].get("security_group", {}).get("IpPermissions", [])
    for node in CONFIG["available_node_types"].values():
        rules += node["node_config"].get("IpPermissions", [])
    for rule in rules:
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not world or (rule["FromPort"], rule["ToPort"]) == (22, 22), rule
    assert "SSH source range" in TEXT and "SecurityGroupIds" in TEXT


def test_runs_and_the_venv_stay_on_this_machine():
    assert {"/runs/", "/.venv/"} <= set(CONFIG["rsync_exclude"])
    assert list(CONFIG["file_mounts"]) == ["~/mmsearch", "~/.ray/auth_token"]  # no runs/ or .venv mounted on their own


def test_a_local_ray_binds_its_dashboard_to_localhost(monkeypatch):
    import ray

    from mmsearch.search import experiment

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    experiment.init_ray(experiment.Settings(), None)
    assert seen["dashboard_host"] == "127.0.0.1"
    assert seen["address"] == "local"  # its own instance: never another Ray running on the machine
