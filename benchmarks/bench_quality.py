"""Quality on real data: frozen-feature linear probe vs the best single trial vs the ensemble.

For one built-in dataset (emoji: image + text + tabular; cloth: text + tabular), on one split
(the experiment's: train / val / holdout), the holdout ("test") score of

1. a linear probe: the pretrained backbones of the search space (Lite0 for images, MiniLM for
   text), frozen, their pooled features + the preprocessed tabular features (numbers standardized,
   categories one-hot) -> logistic regression (classification) or ridge (regression), its
   regularization picked on val;
2. the best single trial of a search (best by val);
3. the Caruana ensemble over all its trials (members picked on val).

    .venv/bin/python benchmarks/bench_quality.py --dataset emoji [--exp runs/demo]
    .venv/bin/python benchmarks/bench_quality.py --dataset cloth --rows 4000 --trials 3

--exp reuses a finished experiment on the same dataset (e.g. the one `mmsearch demo` leaves);
without it a search is run with --space (default: search_spaces/demo.yaml). --rows subsamples the
table first (seeded), for cloth on a small CPU. Writes benchmarks/results/quality_DATASET.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import environment, sample_rows

ROOT = Path(__file__).resolve().parents[1]


def frozen_features(exp: Path, space_fixed: dict) -> dict[str, np.ndarray]:
    """Per part: [N, F] pooled features of the space's pretrained image / text backbones (frozen,
    eval mode) next to the preprocessed tabular features."""
    import torch
    from torch.utils.data import DataLoader

    from mmsearch.config import TrialConfig
    from mmsearch.data.dataset import RowDataset
    from mmsearch.data.prepare import PreparedData
    from mmsearch.models.model import build_model

    data = PreparedData.load(exp / "data")
    cfg = TrialConfig.from_flat({k: v for k, v in space_fixed.items() if k.startswith(("model.", "encoder."))})
    model = build_model(cfg, data).eval()
    frozen = {slot: enc for slot, enc in model.encoders.items() if slot != "tabular"}  # FT-Transformer has no pretraining
    n_cats = [int(c) for c in data.tabular.cardinalities]
    out = {}
    for part in ("train", "val", "holdout"):
        ds = RowDataset(data, part, image_size=model.image_size, tokenize=model.tokenize)
        feats = []
        with torch.inference_mode():
            for batch in DataLoader(ds, batch_size=64):
                cols = [batch["num"].float()]
                cols += [torch.nn.functional.one_hot(batch["cat"][:, j].long(), n).float() for j, n in enumerate(n_cats)]
                for enc in frozen.values():
                    cols += [o.pooled.float() for o in enc(batch).values()]
                feats.append(torch.cat(cols, dim=1).numpy())
        out[part] = np.concatenate(feats)
    return out


def linear_probe(exp: Path, space_fixed: dict) -> tuple[float, dict]:
    """Holdout score of the probe and the regularization picked on val."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from mmsearch import metrics
    from mmsearch.data.prepare import PreparedData

    data = PreparedData.load(exp / "data")
    problem = data.schema.problem_type
    metric = metrics.default_metric(problem)
    x = frozen_features(exp, space_fixed)
    y = {p: data.labels(p) for p in x}
    scaler = StandardScaler().fit(x["train"])
    x = {p: scaler.transform(v) for p, v in x.items()}

    def fit(c):
        if problem == "regression":
            return Ridge(alpha=1.0 / c).fit(x["train"], y["train"])
        return LogisticRegression(C=c, max_iter=3000).fit(x["train"], y["train"])

    def score(model, part):
        if problem == "regression":
            pred = data.target.decode_regression(model.predict(x[part]))
            truth = data.target.decode_regression(y[part])
        else:
            pred, truth = model.predict_proba(x[part]), y[part]
        return metrics.score(metric, truth, pred)

    sign = 1 if metrics.higher_is_better(metric) else -1
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    best_c = max(grid, key=lambda c: sign * score(fit(c), "val"))
    model = fit(best_c)
    return score(model, "holdout"), {"C": best_c, "n_features": int(x["train"].shape[1]), "val": score(model, "val")}


def run_search(dataset, space: Path, trials: int, work: Path) -> Path:
    import ray

    from mmsearch.search import experiment

    settings = experiment.Settings(searcher="tpe", scheduler="asha", num_samples=trials, max_concurrent=1)
    exp = experiment.create(str(dataset.path), dataset.label, space, work / "exp", settings,
                            problem_type=dataset.problem_type)
    try:
        experiment.run(exp)
    finally:
        ray.shutdown()
    return exp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["emoji", "cloth"], required=True)
    ap.add_argument("--exp", help="a finished experiment on this dataset to reuse")
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "demo.yaml"))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--rows", type=int, default=0, help="subsample the table to this many rows (0: all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.rows and args.dataset == "emoji":
        ap.error("--rows is for cloth (emoji is small, and its image paths are relative to its folder)")

    import yaml

    from mmsearch import datasets
    from mmsearch.ensemble.build import build_ensemble

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"mmsearch-quality-{args.dataset}-"))
    if args.exp:
        exp = Path(args.exp)
        space_file = exp / "space.yaml"
    else:
        ds = datasets.load(args.dataset)
        if args.rows:
            ds = sample_rows(ds, args.rows, work)
        space_file = Path(args.space)
        exp = run_search(ds, space_file, args.trials, work)
    search_s = time.perf_counter() - t0

    fixed = yaml.safe_load(space_file.read_text()).get("fixed", {})
    t1 = time.perf_counter()
    probe, probe_info = linear_probe(exp, fixed)
    probe_s = time.perf_counter() - t1
    ens = build_ensemble(exp)
    holdout = {row: ens["scores"][row]["holdout"] for row in ens["scores"]}
    metric = ens["metric"]
    print(f"{args.dataset}: holdout {metric}: linear probe {probe:.4f} | best single trial {holdout['best_single']:.4f} | "
          f"ensemble {holdout['ensemble']:.4f} | uniform {holdout['uniform']:.4f}", flush=True)

    out = {
        "benchmark": "quality: linear probe vs best single trial vs ensemble (holdout)",
        "dataset": args.dataset, "rows_subsample": args.rows or None, "experiment": str(exp),
        "metric": metric,
        "holdout": {"linear_probe": round(probe, 4), **{k: round(v, 4) for k, v in holdout.items()}},
        "probe": probe_info, "ensemble_members": len(ens["members"]),
        "trials": ens["pool"], "search_s": round(search_s, 1), "probe_s": round(probe_s, 1),
        **environment(),
    }
    path = Path(args.out or ROOT / "benchmarks" / "results" / f"quality_{args.dataset}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
