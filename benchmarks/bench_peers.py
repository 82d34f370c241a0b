"""mmsearch under a wall budget vs the peers a user tries first, on one split (issue 15).

Per table (emoji: image + text + tabular, accuracy; cloth: the whole table, `Rating`, regression,
R2; synthetic: mmsearch.data.synthetic, accuracy), the test ("holdout") score of

- **mmsearch**: `search_spaces/auto.yaml` (the default space) under a wall budget, caching of the
  frozen towers' encodings included, one trial at a time; then the Caruana ensemble with its
  defaults (selected on val). Reported: the ensemble, the best single trial (by val), the
  uniform average of all trials, trials finished, wall time;
- **the peers**, on the same split, read after the search: a frozen-feature linear probe (logistic
  regression for classification, ridge for regression; C / alpha picked on val) on all modalities
  and on each single one (Lite0 at its native 224 px, MiniLM mean-pooled at the space's 64 tokens,
  the tabular columns standardized / one-hot), and LightGBM on the tabular columns alone
  (early-stopped on val). The probes read the experiment's own feature cache (the same encodings
  the search's frozen and tree trials read), so their encoding time is the cache's.

    .venv/bin/python benchmarks/bench_peers.py --datasets emoji cloth synthetic
    .venv/bin/python benchmarks/bench_peers.py --datasets emoji --budget emoji=600

Writes benchmarks/results/peers_DATASET.json and the combined table benchmarks/results/peers.md.
Nothing is tuned on the test rows: every choice (probe regularization, LightGBM rounds, ensemble
members) is made on val.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from _common import environment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPACE = ROOT / "search_spaces" / "auto.yaml"
BUDGET_S = {"emoji": 600, "cloth": 1200, "synthetic": 300}  # the budgets (synthetic: ours)
PARTS = ("train", "val", "holdout")


def load_table(name: str, work: Path):
    """(csv path, label, problem type) of a benchmark table."""
    from mmsearch import datasets
    from mmsearch.data.synthetic import make_synthetic

    if name == "synthetic":  # 1,200 rows, each modality shows the class 55 % of the time: fusion pays
        return make_synthetic(work / "synthetic", n=1200, n_classes=4, signal=0.55, image_size=32, seed=0), "label", "multiclass"
    ds = datasets.load_emoji() if name == "emoji" else datasets.load("cloth", label="Rating")
    return ds.path, ds.label, ds.problem_type


def run_search(name: str, work: Path, budget_s: float, threads: int) -> tuple[Path, float]:
    import ray

    from mmsearch.search import experiment

    path, label, problem = load_table(name, work)
    settings = experiment.Settings(searcher="tpe", scheduler="asha", num_samples=500, time_budget_s=budget_s,
                                   max_concurrent=1, cpus_per_worker=threads)
    t0 = time.perf_counter()
    exp = experiment.create(str(path), label, SPACE, work / f"exp_{name}", settings, problem_type=problem)
    try:
        experiment.run(exp)
    finally:
        ray.shutdown()
    return Path(exp), time.perf_counter() - t0


# -- the peers --------------------------------------------------------------------------------
def frozen_features(exp: Path) -> dict[str, dict[str, np.ndarray]]:
    """modality -> part -> [rows, F]: the frozen towers' pooled encodings from the experiment's
    feature cache (built here if the search did not), and the tabular columns preprocessed."""
    import torch
    import yaml

    from mmsearch.config import TrialConfig
    from mmsearch.data import feature_cache
    from mmsearch.data.prepare import PreparedData
    from mmsearch.models.model import build_model

    data = PreparedData.load(exp / "data")
    fixed = yaml.safe_load((exp / "space.yaml").read_text())["fixed"]
    flat = {k: v for k, v in fixed.items() if k.startswith(("model.", "encoder."))}
    cfg = TrialConfig.from_flat({**flat, "model.fusion": "lf_mlp", "model.finetune": "frozen", "model.image_size": 224})
    model = build_model(cfg, data).eval()
    encoded, _ = feature_cache.encodings(model, data, batch_size=64, device=torch.device("cpu"))
    out = {m: {p: np.asarray(a[data.split[p]]).mean(axis=1) for p in PARTS} for m, a in encoded.items()}
    if data.tabular.numeric or data.tabular.categorical:
        out["tabular"] = {}
        for p in PARTS:
            num, present, cats = data.tabular.transform(data.rows(p))
            onehot = [np.eye(n, dtype=np.float32)[cats[:, j]] for j, n in enumerate(data.tabular.cardinalities)]
            out["tabular"][p] = np.concatenate([num, (~present).astype(np.float32), *onehot], axis=1)
    return out


def _score(data, metric: str, part: str, pred: np.ndarray) -> float:
    from mmsearch import metrics

    return metrics.score(metric, data.labels(part), pred)


def linear_probe(data, metric: str, x: dict[str, np.ndarray]) -> dict:
    """Logistic regression / ridge on x (standardized on train), its strength picked on val."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from mmsearch import metrics

    regression = data.schema.problem_type == "regression"
    scaler = StandardScaler().fit(x["train"])
    x = {p: scaler.transform(v) for p, v in x.items()}

    def fit(c):
        if regression:
            return Ridge(alpha=1.0 / c).fit(x["train"], data.labels("train"))
        return LogisticRegression(C=c, max_iter=2000).fit(x["train"], data.labels("train"))

    def predict(model, part):
        return model.predict(x[part]) if regression else model.predict_proba(x[part])

    sign = 1 if metrics.higher_is_better(metric) else -1
    fitted = {c: fit(c) for c in (1e-3, 1e-2, 1e-1, 1.0, 10.0)}
    best = max(fitted, key=lambda c: sign * _score(data, metric, "val", predict(fitted[c], "val")))
    return {"holdout": _score(data, metric, "holdout", predict(fitted[best], "holdout")),
            "val": _score(data, metric, "val", predict(fitted[best], "val")), "C": best,
            "features": int(x["train"].shape[1])}


def lightgbm_tabular(data, metric: str) -> dict:
    """LightGBM on the tabular columns alone (numbers raw with NaN, categories as categorical
    ids), its number of rounds early-stopped on val; LightGBM's defaults otherwise."""
    import lightgbm as lgb

    regression = data.schema.problem_type == "regression"
    x = {}
    for p in PARTS:
        num, present, cats = data.tabular.transform(data.rows(p))
        x[p] = np.concatenate([np.where(present, num, np.nan), cats.astype(np.float64)], axis=1)
    cat_idx = list(range(len(data.tabular.numeric), x["train"].shape[1]))
    n_classes = len(data.target.classes) if not regression else 0
    params = {"objective": "regression" if regression else ("binary" if n_classes == 2 else "multiclass"),
              "verbose": -1, "num_threads": int(os.environ.get("OMP_NUM_THREADS", 2)),
              **({"num_class": n_classes} if n_classes > 2 else {})}
    train = lgb.Dataset(x["train"], data.labels("train"), categorical_feature=cat_idx)
    val = lgb.Dataset(x["val"], data.labels("val"), reference=train)
    booster = lgb.train(params, train, 2000, valid_sets=[val], callbacks=[lgb.early_stopping(50, verbose=False)])

    def predict(part):
        p = booster.predict(x[part], num_iteration=booster.best_iteration)
        return np.stack([1 - p, p], axis=1) if n_classes == 2 else p

    return {"holdout": _score(data, metric, "holdout", predict("holdout")),
            "val": _score(data, metric, "val", predict("val")), "rounds": int(booster.best_iteration)}


def peers(exp: Path, metric: str) -> dict:
    from mmsearch.data.prepare import PreparedData

    data = PreparedData.load(exp / "data")
    t0 = time.perf_counter()
    feats = frozen_features(exp)
    out = {"probe all": linear_probe(data, metric, {p: np.concatenate([f[p] for f in feats.values()], axis=1)
                                                    for p in PARTS})}
    for m, f in feats.items():
        out[f"probe {m}"] = linear_probe(data, metric, f)
    if data.tabular.numeric or data.tabular.categorical:
        out["lightgbm tabular"] = lightgbm_tabular(data, metric)
    return {"scores": out, "seconds": round(time.perf_counter() - t0, 1)}


# -- one table --------------------------------------------------------------------------------
def bench(name: str, work: Path, budget_s: float, threads: int) -> dict:
    from mmsearch.ensemble.build import build_ensemble
    from mmsearch.search.pool import read_pool

    exp, search_s = run_search(name, work, budget_s, threads)
    ens = build_ensemble(exp)
    pool = read_pool(exp).entries
    holdout = {row: round(ens["scores"][row]["holdout"], 4) for row in ens["scores"]}
    result = {
        "dataset": name, "metric": ens["metric"], "budget_s": budget_s, "search_s": round(search_s, 1),
        "trials_finished": sum(e.finished for e in pool), "trials_in_pool": len(pool),
        "mmsearch": holdout, "ensemble_members": {m["trial_id"]: round(m["weight"], 3) for m in ens["members"]},
        "trials": sorted(({"trial": e.trial_id, "fusion": e.config.get("model.fusion"),
                           "finetune": e.config.get("model.finetune"), "modalities": e.config.get("model.modalities"),
                           "val": round(e.val_metric, 4), "epoch": e.epoch, "finished": e.finished} for e in pool),
                         key=lambda t: t["trial"]),
        "experiment": str(exp),
    }
    result["peers"] = peers(exp, ens["metric"])
    best_peer = max(result["peers"]["scores"].items(), key=lambda kv: kv[1]["holdout"])
    result["best_peer"] = {"name": best_peer[0], "holdout": round(best_peer[1]["holdout"], 4)}
    result["ensemble_minus_best_peer"] = round(holdout["ensemble"] - best_peer[1]["holdout"], 4)
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| table | metric | budget / search wall | trials (finished / in pool) | ensemble | best single | uniform | "
             "probe all | probe image | probe text | probe tabular | LightGBM tabular | ensemble - best peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r["peers"]["scores"]
        cell = lambda k: f"{p[k]['holdout']:.4f}" if k in p else "-"  # noqa: E731
        m = r["mmsearch"]
        lines.append(f"| {r['dataset']} | {r['metric']} | {r['budget_s']:.0f} s / {r['search_s']:.0f} s | "
                     f"{r['trials_finished']} / {r['trials_in_pool']} | **{m['ensemble']:.4f}** | {m['best_single']:.4f} | "
                     f"{m['uniform']:.4f} | {cell('probe all')} | {cell('probe image')} | {cell('probe text')} | "
                     f"{cell('probe tabular')} | {cell('lightgbm tabular')} | {r['ensemble_minus_best_peer']:+.4f} "
                     f"({r['best_peer']['name']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["emoji", "cloth", "synthetic"], choices=list(BUDGET_S))
    ap.add_argument("--budget", nargs="*", default=[], help="NAME=SECONDS, e.g. emoji=600 (defaults: the issue's)")
    ap.add_argument("--threads", type=int, default=2, help="CPUs of the one trial at a time")
    ap.add_argument("--work", default="/tmp/mmsearch-bench-peers", help="where the experiments go (kept)")
    args = ap.parse_args()
    budgets = {**BUDGET_S, **{k: float(v) for k, v in (b.split("=") for b in args.budget)}}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        if (work / f"exp_{name}").exists():
            raise SystemExit(f"{work / f'exp_{name}'} exists: remove it or pass another --work")
        result = {**bench(name, work, budgets[name], args.threads), **environment()}
        (RESULTS / f"peers_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: result[k] for k in ("dataset", "mmsearch", "best_peer", "ensemble_minus_best_peer")}), flush=True)
    done = [json.loads((RESULTS / f"peers_{n}.json").read_text()) for n in BUDGET_S if (RESULTS / f"peers_{n}.json").is_file()]
    (RESULTS / "peers.md").write_text(markdown(done))
    print(markdown(done))


if __name__ == "__main__":
    main()
