"""Missing modalities on emoji: how holdout accuracy falls when images and texts go missing, with
and without the tricks meant for it (issue 11).

Four variants on top of bench_tricks' baseline: baseline, +modality_dropout, +learnable missing
embeddings (model.missing: learnable), and both. Each is trained with 0 %, 30 % and 60 % of the
training rows' images and texts missing (each cell independently, seeded), and every trained
model is evaluated on the holdout rows with 0 %, 30 % and 60 % of their images and texts
missing (again independently). Same 600-row sample and split as bench_tricks; one torch thread.

    .venv/bin/python benchmarks/bench_missing.py [--seeds 0] [--epochs 2] [--rows 600]

Writes benchmarks/results/missing.json, missing.md (tables) and missing.png (accuracy vs the share
missing at test time, one panel per share missing at training time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import environment
from bench_tricks import BASELINE, DATASETS, RESULTS, prepare_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VARIANTS = {
    "baseline": {},
    "+modality_dropout": {"tricks.modality_dropout.enabled": True},
    "+learnable_missing": {"model.missing": "learnable"},
    "+both": {"tricks.modality_dropout.enabled": True, "model.missing": "learnable"},
}
SHARES = (0.0, 0.3, 0.6)


def blanked(data_dir: Path, out: Path, part: str, share: float, seed: int) -> Path:
    """A copy of the prepared data whose `part` rows lose each image and each text with
    probability `share` (the other parts as they were)."""
    import pandas as pd

    from mmsearch.data.prepare import PreparedData

    shutil.copytree(data_dir, out)
    data = PreparedData.load(out)
    table = data.table.copy()
    rng = np.random.default_rng([seed, int(share * 100), len(part)])
    rows = data.split[part]
    for role in ("image", "text"):
        for col in data.schema.by_role(role):
            drop = rows[rng.random(len(rows)) < share]
            table.iloc[drop, table.columns.get_loc(col)] = None
    table.to_parquet(out / "table.parquet")
    assert isinstance(table, pd.DataFrame)
    return out


def holdout_accuracy(run_dir: Path, data_dir: Path) -> float:
    """The trained (final) model's accuracy on the holdout rows of `data_dir`."""
    import torch
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader

    from mmsearch.config import TrialConfig
    from mmsearch.data.dataset import RowDataset
    from mmsearch.data.prepare import PreparedData
    from mmsearch.layout import TrialRunDir
    from mmsearch.models.model import build_model
    from mmsearch.train.evaluate import predict

    final = TrialRunDir(run_dir).final
    cfg = TrialConfig.from_flat(json.loads(final.config_file.read_text()))
    data = PreparedData.load(data_dir)
    model = build_model(cfg, data, pretrained=False)
    model.load_state_dict(load_file(str(final.weights)))
    ds = RowDataset(data, "holdout", view=model.view, image_size=model.image_size, tokenize=model.tokenize)
    preds, labels, _ = predict(model, DataLoader(ds, batch_size=64), torch.device("cpu"), "fp32", data.schema.problem_type)
    return float((preds.argmax(1) == labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rows", type=int, default=600, help="seeded sample of emoji's rows")
    args = ap.parse_args()

    import torch

    from mmsearch._atomic import atomic_write_text
    from mmsearch.train.run import run_local

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-missing-"))
    runs, t0 = [], time.perf_counter()
    try:
        data = prepare_split("emoji", args.rows, work)
        tests = {share: blanked(data.dir, work / f"test-{share}", "holdout", share, seed=99) for share in SHARES}
        for seed in args.seeds:
            for train_share in SHARES:
                train_dir = blanked(data.dir, work / f"train-{train_share}-{seed}", "train", train_share, seed)
                for variant, overrides in VARIANTS.items():
                    trial = {**BASELINE, "model.max_text_len": DATASETS["emoji"]["max_text_len"], **overrides,
                             "train.epochs": args.epochs, "train.seed": seed}
                    out = work / f"run-{variant}-{train_share}-{seed}"
                    started = time.perf_counter()
                    run_local(trial, train_dir, out)
                    acc = {str(share): holdout_accuracy(out, tests[share]) for share in SHARES}
                    runs.append({"variant": variant, "seed": seed, "train_missing": train_share, "holdout_accuracy": acc,
                                 "wall_s": round(time.perf_counter() - started, 1)})
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"{variant} seed {seed} train missing {train_share:.0%}: {acc}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = {"benchmark": "missing modalities on emoji (holdout accuracy by share of images and texts missing)",
           "settings": {"rows": args.rows, "epochs": args.epochs, "seeds": args.seeds, "shares": SHARES,
                        "baseline": BASELINE, "variants": VARIANTS},
           "runs": runs, "total_s": round(time.perf_counter() - t0), **environment()}
    atomic_write_text(RESULTS / "missing.json", json.dumps(out, indent=1) + "\n")
    lines = []
    for train_share in SHARES:
        lines += [f"### trained with {train_share:.0%} of images and texts missing: holdout accuracy (mean over seeds {args.seeds})", "",
                  "| variant | " + " | ".join(f"{s:.0%} missing at test" for s in SHARES) + " |", "|---|" + "---|" * len(SHARES)]
        for variant in VARIANTS:
            rs = [r for r in runs if r["variant"] == variant and r["train_missing"] == train_share]
            lines.append(f"| {variant} | " + " | ".join(f"{statistics.mean(r['holdout_accuracy'][str(s)] for r in rs):.3f}" for s in SHARES) + " |")
        lines.append("")
    atomic_write_text(RESULTS / "missing.md", "\n".join(lines))
    plot(runs, RESULTS / "missing.png")
    print("\n".join(lines))


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SHARES), figsize=(4 * len(SHARES), 3.4), sharey=True)
    for ax, train_share in zip(axes, SHARES):
        for variant in VARIANTS:
            rs = [r for r in runs if r["variant"] == variant and r["train_missing"] == train_share]
            ax.plot([100 * s for s in SHARES], [statistics.mean(r["holdout_accuracy"][str(s)] for r in rs) for s in SHARES],
                    marker="o", label=variant)
        ax.set_title(f"trained with {train_share:.0%} missing")
        ax.set_xlabel("% images and texts missing at test")
    axes[0].set_ylabel("holdout accuracy (emoji)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
