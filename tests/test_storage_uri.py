"""--storage and experiment arguments as file:// URIs (object storage: test_object_storage.py)."""
from __future__ import annotations

import pytest
import yaml

from conftest import TINY
from mmsearch.cli import main
from mmsearch.errors import ConfigError
from mmsearch.layout.uri import local_path


def test_file_uris_name_local_paths(tmp_path):
    assert local_path(f"file://{tmp_path}/runs", "--storage") == tmp_path / "runs"
    assert local_path("file://localhost/mnt/shared%20runs", "--storage").as_posix() == "/mnt/shared runs"
    assert local_path("runs", "--storage").as_posix() == "runs"
    with pytest.raises(ConfigError, match=r"--storage s3://bucket/runs: not a local folder"):
        local_path("s3://bucket/runs", "--storage")
    with pytest.raises(ConfigError, match="not host 'other'"):
        local_path("file://other/runs", "--storage")


def test_the_cli_takes_file_uris(tmp_path, capsys):
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.search import experiment

    table = make_synthetic(tmp_path / "table", n=96, seed=2)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": TINY}))
    exp = experiment.create(table, "label", space, tmp_path / "runs" / "x", experiment.Settings(num_samples=1))
    assert main(["status", f"file://{exp}"]) == 0
    assert f"experiment {exp}: 0 trials" in capsys.readouterr().out
