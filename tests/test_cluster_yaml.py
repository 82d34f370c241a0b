"""cluster.yaml passes Ray's own autoscaler schema check (offline: nothing is launched)."""
from pathlib import Path

import yaml


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).parent.parent / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["trial_slot"] >= 1  # trial drivers are placed by this resource
