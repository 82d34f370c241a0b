"""Ensemble options on a real pool: val and holdout of each option set side by side.

A pool of short, varied trials (fusions, a few tricks, learning rates, single modalities; 1-2
epochs at 64 px on one torch thread) is trained once per dataset on a seeded 600-row sample with
a fixed split, under --exp (default /tmp/mmsearch-bench-ensemble); a later run reuses it and
trains only the trials missing there. Then, for each option set in OPTIONS (Caruana size, sorted
initialisation, bagging, selection metric; learned weights), `build_ensemble` picks members on
val and the ensemble is scored on val and holdout, next to the best single trial (best by val)
and the uniform average. Options are compared on val -> holdout generalisation, never picked on
holdout.

The val and holdout parts are small (~90 rows each): one holdout row is ~1 point of accuracy.
To see what is noise, the script also re-splits the val + holdout rows RESPLITS times into two
random halves, selects on one half and scores on the other (the trials never saw either part:
no soup, no early stopping in the pool): each option's mean and std over the re-splits, the gap
between the half it was selected on and the other half, its gain over the best single trial, and
paired differences between options (COMPARISONS; the same halves for every option). The halves
overlap from one re-split to the next: the std is the spread of one split, not a standard error,
so the share of re-splits where an option is ahead is the better guide.

    .venv/bin/python benchmarks/bench_ensemble.py [--exp DIR] [--datasets emoji cloth] [--build-only]

Writes benchmarks/results/ensemble.json and ensemble.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from _common import environment, sample_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"
ROWS, SPLIT_SEED, RESPLITS = 600, 0, 100

BASE = {"model.image": "lite0", "model.text": "minilm", "model.tabular": "ft_transformer", "model.fusion": "lf_mlp",
        "model.image_size": 64, "optim.batch_size": 32, "optim.lr": 3e-4, "train.epochs": 2}
# trial id -> overrides on BASE: varied on purpose (an ensemble needs members that err differently).
# No soup and no early stopping: the trials never use val, so val and holdout are exchangeable.
POOL = {
    "lf_mlp": {},
    "lf_mlp_lr1e-3": {"optim.lr": 1e-3},
    "lf_mlp_bag": {"tricks.grad_clip.enabled": True, "tricks.lr_warmup.enabled": True,
                   "tricks.layerwise_lr_decay.enabled": True, "train.seed": 1},
    "lf_transformer": {"model.fusion": "lf_transformer"},
    "lf_transformer_lr1e-4": {"model.fusion": "lf_transformer", "optim.lr": 1e-4, "train.seed": 2},
    "early": {"model.fusion": "early"},
    "early_lr1e-3_1ep": {"model.fusion": "early", "optim.lr": 1e-3, "train.epochs": 1},
    "modality_dropout": {"tricks.modality_dropout.enabled": True},
    "manifold_mixup": {"model.fusion": "lf_transformer", "tricks.manifold_mixup.enabled": True},
    "text_only": {"model.modalities": "text", "optim.lr": 1e-3},
    "image_only": {"model.modalities": "image", "optim.lr": 1e-3},
    "tabular_only": {"model.modalities": "tabular", "optim.lr": 1e-3, "train.epochs": 5},
}
DATASETS = {
    "emoji": {"load": {}, "max_text_len": 32, "skip": (), "one_epoch": ()},
    # text + tabular: no image-only trial; longer texts: 1 epoch for three trials keeps the pool cheap
    "cloth": {"load": {"label": "Recommended IND"}, "max_text_len": 64, "skip": ("image_only",),
              "one_epoch": ("lf_mlp_bag", "lf_transformer_lr1e-4", "manifold_mixup")},
}


def build_pool(dataset: str, exp: Path) -> None:
    """exp/data (the fixed split) and exp/train/TRIAL for every POOL trial not there yet."""
    import torch

    from mmsearch import datasets
    from mmsearch.data.prepare import prepare
    from mmsearch.layout import TrialRunDir
    from mmsearch.train.run import run_local

    torch.set_num_threads(1)
    spec = DATASETS[dataset]
    if not (exp / "data").is_dir():
        exp.mkdir(parents=True, exist_ok=True)
        table = sample_rows(datasets.load(dataset, **spec["load"]), ROWS, exp)
        prepare(str(table.path), table.label, exp / "data", problem_type=table.problem_type, seed=SPLIT_SEED)
    for tid, over in POOL.items():
        out = exp / "train" / tid
        if tid in spec["skip"] or TrialRunDir(out).final.problem() is None:
            continue
        trial = {**BASE, "model.max_text_len": spec["max_text_len"], **over}
        if tid in spec["one_epoch"]:
            trial["train.epochs"] = 1
        t0 = time.perf_counter()
        final = run_local(trial, exp / "data", out)
        m = final["metric"]
        print(f"[{dataset}] {tid}: val {m} {final[f'val_{m}']:.4f}, {time.perf_counter() - t0:.0f} s", flush=True)


def option_sets(task_metric: str) -> dict[str, dict]:
    """name -> build_ensemble options: the Caruana grid (size x sorted init x bagging x selection
    metric: the task metric or log loss), then learned weights."""
    sets = {}
    for metric in (task_metric, "log_loss"):
        for size in (10, 25, 50):
            for init in (0, 5):
                for bags in (0, 20):
                    name = f"{metric} size {size}" + (f" init {init}" if init else "") + (f" bag {bags}" if bags else "")
                    sets[name] = {"method": "caruana", "size": size, "metric": metric, "sorted_init": init, "bagging": bags}
    sets["learned"] = {"method": "learned"}
    return sets


def load(exp: Path):
    """(task metric, trial ids, {part: preds [M, N, ...]}, {part: labels}) of the experiment's pool."""
    import numpy as np

    from mmsearch.data.prepare import PreparedData
    from mmsearch.search.pool import read_pool

    pool = read_pool(exp).entries  # sorted by val score, best first
    data = PreparedData.load(exp / "data")
    assert data.schema.problem_type != "regression", "the resplits below take class labels"
    preds = {p: np.stack([e.predictions(p).astype(np.float64) for e in pool]) for p in ("val", "holdout")}
    return pool[0].metric, data.schema.problem_type, [e.trial_id for e in pool], preds, \
        {p: data.labels(p) for p in ("val", "holdout")}


def on_split(exp: Path, sets: dict) -> dict:
    """The project's own protocol: build_ensemble picks on val, scores on holdout, per option set."""
    from mmsearch.ensemble.build import build_ensemble

    rows = {}
    for name, opts in sets.items():
        r = build_ensemble(exp, **opts)
        rows[name] = {"val": r["scores"]["ensemble"]["val"], "holdout": r["scores"]["ensemble"]["holdout"],
                      "members": r["scores"]["ensemble"]["members"], "selection": r["selection"]}
    for ref in ("best_single", "uniform"):
        rows[ref] = {k: v for k, v in r["scores"][ref].items()}
    build_ensemble(exp)  # leave the defaults' ensemble in the experiment
    return rows


def resplits(metric: str, problem_type: str, preds: dict, truth: dict, sets: dict, n: int) -> dict:
    """Select on a random half of val + holdout, score on the other half, n times (the same halves
    for every option set, so differences between options are paired)."""
    import numpy as np

    from mmsearch import metrics
    from mmsearch.ensemble.options import Selection

    P = np.concatenate([preds["val"], preds["holdout"]], axis=1)
    y = np.concatenate([truth["val"], truth["holdout"]])
    rng = np.random.default_rng(0)
    sign = 1 if metrics.higher_is_better(metric) else -1
    out = {name: {"sel": [], "other": []} for name in [*sets, "best_single", "uniform"]}
    for _ in range(n):
        perm = rng.permutation(len(y))
        a, b = perm[: len(y) // 2], perm[len(y) // 2:]
        single = [metrics.score(metric, y[a], P[m][a]) for m in range(len(P))]
        best = int(np.argmax(sign * np.array(single)))
        ws = {name: Selection(**opts).resolve(problem_type).weights(P[:, a], y[a]) for name, opts in sets.items()}
        ws["best_single"] = np.eye(len(P))[best]
        ws["uniform"] = np.full(len(P), 1 / len(P))
        for name, w in ws.items():
            blend = np.tensordot(w, P, axes=1)
            out[name]["sel"].append(metrics.score(metric, y[a], blend[a]))
            out[name]["other"].append(metrics.score(metric, y[b], blend[b]))
    return out


def summarise(runs: dict, sign: int) -> dict:
    """Per option: mean selection-half and other-half score, their gap, and the paired gain over the
    best single trial on the other half (mean, std over re-splits, share of re-splits it is ahead)."""
    import numpy as np

    base = np.array(runs["best_single"]["other"])
    out = {}
    for name, r in runs.items():
        sel, other = np.array(r["sel"]), np.array(r["other"])
        gain = sign * (other - base)
        out[name] = {"sel_mean": float(sel.mean()), "other_mean": float(other.mean()), "other_std": float(other.std()),
                     "gap": float(sign * (sel - other).mean()), "gain_vs_best_single": float(gain.mean()),
                     "gain_std": float(gain.std()), "ahead_share": float((gain > 0).mean()), "tied_share": float((gain == 0).mean())}
    return out


# (A, B): A against B on the same re-splits; {t} = the task metric. The defaults are read from these.
COMPARISONS = [
    ("log_loss size 25", "{t} size 25"), ("log_loss size 25 init 5", "{t} size 25 init 5"),
    ("log_loss size 25 bag 20", "{t} size 25 bag 20"),
    ("log_loss size 10", "log_loss size 25"), ("log_loss size 50", "log_loss size 25"),
    ("{t} size 10", "{t} size 25"), ("{t} size 50", "{t} size 25"),
    ("log_loss size 25 init 5", "log_loss size 25"), ("log_loss size 25 bag 20", "log_loss size 25"),
    ("log_loss size 25 init 5 bag 20", "log_loss size 25"), ("{t} size 25 init 5", "{t} size 25"),
    ("{t} size 25 bag 20", "{t} size 25"),
    ("learned", "log_loss size 25"), ("log_loss size 25", "{t} size 50"),
    ("log_loss size 25", "best_single"), ("log_loss size 25", "uniform"),
]


def paired(runs: dict, on_split: dict, sign: int, task_metric: str) -> list[dict]:
    """A - B on the other half of each re-split (sign: + = A better), and on the project's own split."""
    import numpy as np

    out = []
    for a, b in COMPARISONS:
        a, b = a.format(t=task_metric), b.format(t=task_metric)
        d = sign * (np.array(runs[a]["other"]) - np.array(runs[b]["other"]))
        out.append({"a": a, "b": b, "mean": float(d.mean()), "std": float(d.std()), "a_ahead": float((d > 0).mean()),
                    "tied": float((d == 0).mean()), "holdout": sign * (on_split[a]["holdout"] - on_split[b]["holdout"])})
    return out


def markdown(results: dict) -> str:
    n = results["settings"]["resplits"]
    lines = ["Ensemble options (benchmarks/bench_ensemble.py). val / holdout: `build_ensemble` on the fixed split "
             f"(members picked on val). Re-splits: {n} random halvings of val + holdout, selected on one half "
             "and scored on the other (mean over re-splits); gap = selection half - other half (optimism); gain = "
             "paired difference with the best single trial (best on the selection half). Option names: selection "
             "metric, Caruana steps, sorted init, bags (of half the trials).", ""]
    for dataset, r in results["datasets"].items():
        m = r["metric"]
        lines += [f"### {dataset}: {m}, pool of {len(r['pool'])} trials ({r['rows']['val']} val rows, "
                  f"{r['rows']['holdout']} holdout rows)", "",
                  "Pool (val / holdout): " + ", ".join(f"{t['trial_id']} {t['val']:.3f}/{t['holdout']:.3f}" for t in r["pool"]), "",
                  f"| option | val {m} | holdout {m} | members | re-splits: selection half | other half, mean ± std | "
                  f"gap (sel - other) | gain vs best single, mean ± std | ahead / tied of {results['settings']['resplits']} |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in r["on_split"].items():
            s = r["resplits"][name]
            members = row.get("members", 1 if name == "best_single" else len(r["pool"]))
            lines.append(f"| {name} | {row['val']:.4f} | {row['holdout']:.4f} | {members} | {s['sel_mean']:.4f} | "
                         f"{s['other_mean']:.4f} ± {s['other_std']:.4f} | {s['gap']:+.4f} | "
                         f"{s['gain_vs_best_single']:+.4f} ± {s['gain_std']:.4f} | {s['ahead_share']:.0%} / {s['tied_share']:.0%} |")
        lines += ["", f"{dataset}, paired: A - B in holdout {m} (+ = A better), on the other half of each re-split "
                  "and on the fixed split", "",
                  "| A | B | re-splits: mean ± std | A ahead / tied | fixed split |", "|---|---|---|---|---|"]
        lines += [f"| {c['a']} | {c['b']} | {c['mean']:+.4f} ± {c['std']:.4f} | {c['a_ahead']:.0%} / {c['tied']:.0%} | "
                  f"{c['holdout']:+.4f} |" for c in r["paired"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def one_line_lists(text: str) -> str:
    """Lists of numbers on one line each (the re-split scores would take a line per number)."""
    return re.sub(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp", type=Path, default=Path("/tmp/mmsearch-bench-ensemble"),
                    help="root of the pools (DIR/DATASET is an experiment); built there if missing, reused if present")
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--resplits", type=int, default=RESPLITS)
    ap.add_argument("--build-only", action="store_true", help="train the missing pool trials and stop")
    args = ap.parse_args()

    from mmsearch._atomic import atomic_write_text
    from mmsearch import metrics

    for dataset in args.datasets:
        build_pool(dataset, args.exp / dataset)
    if args.build_only:
        return
    results = {"benchmark": "ensemble options: select on val, score on holdout; plus val+holdout re-splits",
               "settings": {"exp": str(args.exp), "rows": ROWS, "split_seed": SPLIT_SEED, "resplits": args.resplits,
                            "base": BASE, "pool": POOL},
               "datasets": {}, **environment()}
    for dataset in args.datasets:
        exp = args.exp / dataset
        t0 = time.perf_counter()
        metric, problem_type, ids, preds, truth = load(exp)
        sets = option_sets(metric)
        single = {p: [metrics.score(metric, truth[p], preds[p][m]) for m in range(len(ids))] for p in preds}
        runs = resplits(metric, problem_type, preds, truth, sets, args.resplits)
        sign = 1 if metrics.higher_is_better(metric) else -1
        split = on_split(exp, sets)
        results["datasets"][dataset] = {
            "metric": metric, "rows": {p: len(truth[p]) for p in truth}, "options": sets,
            "pool": [{"trial_id": t, "val": single["val"][i], "holdout": single["holdout"][i]} for i, t in enumerate(ids)],
            "on_split": split, "resplits": summarise(runs, sign), "paired": paired(runs, split, sign, metric),
            # per option: selection-half and other-half score of every re-split (to pair any two options)
            "resplit_scores": {n: {k: [round(v, 5) for v in vs] for k, vs in r.items()} for n, r in runs.items()},
            "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[{dataset}] options measured in {results['datasets'][dataset]['seconds']:.0f} s", flush=True)
    atomic_write_text(RESULTS / "ensemble.json", one_line_lists(json.dumps(results, indent=1)) + "\n")
    atomic_write_text(RESULTS / "ensemble.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
