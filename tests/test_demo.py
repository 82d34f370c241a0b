"""`mmsearch demo`'s whole flow (search -> ensemble -> export -> predict on the test rows), on the
synthetic table with tiny backbones: the real demo runs the same code on emoji."""
import json

import pytest
import yaml

from mmsearch.datasets import TableDataset, make_synthetic
from mmsearch.demo import run_demo

from conftest import TINY

TINY_FIXED = {k: v for k, v in TINY.items() if k != "optim.lr"}  # the learning rate is searched


@pytest.mark.ray
def test_demo_searches_ensembles_exports_and_predicts(tmp_path):
    table = TableDataset(name="synthetic", path=make_synthetic(tmp_path / "table", n=120, seed=4), label="label",
                         problem_type="multiclass", description="synthetic image + text + tabular")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": TINY_FIXED, "search": {"optim.lr": {"loguniform": [1e-3, 1e-2]}}}))
    lines = []
    summary = run_demo(tmp_path / "demo", trials=2, table=table, space=space, log=lines.append)

    text = "\n".join(lines)
    assert all(f"[demo {i}/6]" in text for i in range(1, 7))  # progress through every step
    assert summary["trials"] == 2 and (tmp_path / "demo" / "bundle" / "manifest.json").is_file()
    # the bundle, run on the test rows, scores exactly what the ensemble's holdout score said
    ens = json.loads((tmp_path / "demo" / "ensemble" / "ensemble.json").read_text())
    assert summary["ensemble_test"] == ens["scores"]["ensemble"]["holdout"]
    assert summary["best_single_test"] == ens["scores"]["best_single"]["holdout"]
    assert f"ensemble {summary['ensemble_test']:.4f}" in text and str(tmp_path / "demo" / "bundle") in text
    report = tmp_path / "demo" / "report.html"  # the last step: the report, its path printed
    assert summary["report"] == str(report) and f"report: {report}" in text
    assert "id='attribution'" in report.read_text() and "data:image/png;base64," in report.read_text()

    # rerun: the finished search is kept (no trial reruns), the rest is rebuilt
    again = run_demo(tmp_path / "demo", trials=2, table=table, space=space, log=lambda _: None)
    assert again["ensemble_test"] == summary["ensemble_test"] and again["trials"] == 2
