"""The bag of tricks at CPU size: the baseline vs the baseline + one trick, paired over seeds.

The paper's protocol (Tang et al., arXiv 2412.16243) scaled down to a CPU: the baseline is LF-MLP
+ the basic tricks ("Baseline+": greedy soup, grad clip 1.0, LR warmup 0.1, LLRD 0.9); each other
variant in VARIANTS changes one thing on top of it. Each (dataset, seed, variant) trains in-process
(run_local: no Ray, so training is compared, not Ray's overhead) on one prepared split per dataset,
the same for every variant and seed; the seeds vary train.seed. Per run: the holdout score of the
final (souped) weights in the dataset's default metric, the wall time, and the seconds per epoch
(training + the val / holdout evaluation; mean over the epochs after the first). A variant whose
config the installed mmsearch rejects (a trick from a branch not merged yet) is skipped, and
recorded as skipped with the reason.

    .venv/bin/python benchmarks/bench_tricks.py [--datasets emoji cloth] [--seeds 0 1 2] [--resume]
    .venv/bin/python benchmarks/bench_tricks.py --resume --variants +my_trick  # a new trick, next to the runs there
    .venv/bin/python benchmarks/bench_tricks.py --quick --datasets emoji       # smoke run

Writes benchmarks/results/tricks_<dataset>.json after every run (--resume keeps the runs already
there whose settings match, and trains only the missing ones) and the table of all datasets to
benchmarks/results/tricks.md (--quick: tricks_quick_*, so a smoke run never overwrites real figures).
One torch thread per run by default: the scores then do not depend on the load, and two processes
(one per dataset) can share a 2-core machine; the time columns compare variants within one file.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path

from _common import environment, sample_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"

# "Baseline+" at CPU size: the packaged backbones, small images, demo.yaml's batch and lr range
BASELINE = {
    "model.image": "lite0", "model.text": "minilm", "model.tabular": "ft_transformer", "model.fusion": "lf_mlp",
    "model.image_size": 64, "optim.batch_size": 32, "optim.lr": 3e-4,
    "tricks.soup.enabled": True,
    "tricks.grad_clip.enabled": True, "tricks.grad_clip.max_norm": 1.0,
    "tricks.lr_warmup.enabled": True, "tricks.lr_warmup.fraction": 0.1,
    "tricks.layerwise_lr_decay.enabled": True, "tricks.layerwise_lr_decay.decay": 0.9,
}
# variant -> flat config overrides on top of BASELINE (a trick's own defaults unless given here).
# Later issues add their tricks here; nothing else in the script needs to change.
VARIANTS = {
    "baseline": {},
    "+lf_transformer": {"model.fusion": "lf_transformer"},
    "+early": {"model.fusion": "early"},
    "+lf_aligned": {"model.pair": "clip_lite0_minilm"},
    "+tabular_as_text": {"tricks.tabular_as_text.enabled": True, "tricks.tabular_as_text.position": "after"},
    "+tabular_as_text (fields first)": {"tricks.tabular_as_text.enabled": True, "tricks.tabular_as_text.position": "before"},
    "+align_kl": {"tricks.align_kl.enabled": True},
    "+align_infonce": {"tricks.align_infonce.enabled": True},
    "+modality_dropout": {"tricks.modality_dropout.enabled": True},
    # issue 11: augmentation and missing inputs
    "+augment": {"tricks.augment.enabled": True},
    "+manifold_mixup": {"tricks.manifold_mixup.enabled": True},
    "+lemda": {"tricks.lemda.enabled": True},
    "+learnable_missing": {"model.missing": "learnable"},
    # issue 12: single modalities (a table without one: n/a) and per-modality heads / Gradient Blending
    "image only": {"model.modalities": "image"},
    "text only": {"model.modalities": "text"},
    "tabular only": {"model.modalities": "tabular"},
    "+modality_heads": {"tricks.modality_heads.enabled": True},
    "+gblend_offline": {"tricks.gblend.enabled": True, "tricks.gblend.mode": "offline"},
    "+gblend_online": {"tricks.gblend.enabled": True, "tricks.gblend.mode": "online"},
    # issue 15: frozen towers (the first run of a dataset also builds the feature cache) and a
    # frozen trial at a learning rate for fresh layers
    "+frozen": {"model.finetune": "frozen"},
    "+frozen, lr 3e-3": {"model.finetune": "frozen", "optim.lr": 3e-3},
    "+top_k 2": {"model.finetune": "top_k", "model.top_k": 2},
}
# dataset -> its loader's arguments and the text length (cloth's reviews are longer than emoji names)
DATASETS = {
    "emoji": {"load": {}, "max_text_len": 32},
    "cloth": {"load": {"label": "Recommended IND"}, "max_text_len": 64},
}
SPLIT_SEED = 0  # one split per dataset, whatever train.seed is


def skipped_variants() -> dict[str, str]:
    """Variants whose config the installed mmsearch rejects -> why."""
    from mmsearch.config import TrialConfig
    from mmsearch.errors import ConfigError

    skipped = {}
    for name, overrides in VARIANTS.items():
        try:
            TrialConfig.from_flat({**BASELINE, **overrides})
        except ConfigError as e:
            skipped[name] = str(e).split("; valid keys")[0]  # the list of all valid keys is long
    return skipped


def prepare_split(dataset: str, rows: int | None, work: Path):
    from mmsearch import datasets
    from mmsearch.data.prepare import prepare

    table = datasets.load(dataset, **DATASETS[dataset]["load"])
    if rows:
        table = sample_rows(table, rows, work)
    return prepare(str(table.path), table.label, work / f"data-{dataset}", problem_type=table.problem_type, seed=SPLIT_SEED)


def one_run(trial: dict, data, out: Path) -> dict:
    from mmsearch.layout import TrialRunDir
    from mmsearch.train.run import run_local

    t0 = time.perf_counter()
    final = run_local(trial, data.dir, out)
    wall = time.perf_counter() - t0
    epochs = [row["epoch_time_s"] for row in TrialRunDir(out).final.trainer()["history"]]
    metric = final["metric"]
    return {"metric": metric, "holdout": final[f"holdout_{metric}"], "val": final[f"val_{metric}"],
            "wall_s": round(wall, 1), "epoch_time_s": [round(t, 2) for t in epochs],
            "s_per_epoch": round(statistics.mean(epochs[1:] or epochs), 2),
            "split": {part: len(rows) for part, rows in data.split.items()},
            **{k: round(v, 4) for k, v in final.items() if k.startswith("gblend_")}}  # G-Blend's weights, G and O


def spread(values: list[float], digits: int = 4) -> str:
    """mean ± sample std (no std from one value)."""
    std = f"{statistics.stdev(values):.{digits}f}" if len(values) > 1 else "-"
    return f"{statistics.mean(values):.{digits}f} ± {std}"


def markdown(runs: list[dict], skipped: dict[str, str]) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        done = [r for r in runs if r["dataset"] == dataset and "error" not in r and "not_applicable" not in r]
        if not done:
            continue
        by_variant = {v: {r["seed"]: r for r in done if r["variant"] == v} for v in VARIANTS}
        base = by_variant["baseline"]
        base_epoch = statistics.mean(r["s_per_epoch"] for r in base.values()) if base else None
        split = "/".join(str(n) for n in done[0]["split"].values())
        lines += [f"### {dataset}: holdout {done[0]['metric']} (rows train/val/holdout {split})", "",
                  "| variant | holdout, mean ± std | Δ vs baseline, paired | seeds | wall s / run | s / epoch | time / epoch vs baseline |",
                  "|---|---|---|---|---|---|---|"]
        for variant, by_seed in by_variant.items():
            if not by_seed:
                continue
            paired = [r["holdout"] - base[s]["holdout"] for s, r in by_seed.items() if s in base]
            delta = "-" if variant == "baseline" or not paired else f"{spread(paired)} (n={len(paired)})"
            s_epoch = statistics.mean(r["s_per_epoch"] for r in by_seed.values())
            ratio = f"{s_epoch / base_epoch:.2f}x" if base_epoch else "-"
            lines.append(f"| {variant} | {spread([r['holdout'] for r in by_seed.values()])} | {delta} | {len(by_seed)} | "
                         f"{statistics.mean(r['wall_s'] for r in by_seed.values()):.0f} | {s_epoch:.1f} | {ratio} |")
        lines.append("")
        blended = [(v, r) for v in VARIANTS for r in by_variant[v].values() if any(k.startswith("gblend_w_") for k in r)]
        if blended:
            heads = sorted({k[len("gblend_w_"):] for _, r in blended for k in r if k.startswith("gblend_w_")})
            lines += [f"{dataset}: G-Blend at the end (per head: weight w, generalization gained G and overfitting gained O on V, mean over seeds)", "",
                      "| variant | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
            for variant in dict.fromkeys(v for v, _ in blended):
                rs = [r for v, r in blended if v == variant]

                def mean(key):
                    values = [r[key] for r in rs if key in r]
                    return statistics.mean(values) if values else float("nan")
                cells = [f"w {mean(f'gblend_w_{h}'):.2f}, G {mean(f'gblend_G_{h}'):.3f}, O {mean(f'gblend_O_{h}'):.3f}" for h in heads]
                lines.append(f"| {variant} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += [f"- n/a: {r['dataset']} {r['variant']}: {r['not_applicable']}" for r in runs if "not_applicable" in r and r["seed"] == min(x["seed"] for x in runs)]
    lines += [f"- error: {r['dataset']} {r['variant']} seed {r['seed']}: {r['error']}" for r in runs if "error" in r]
    lines += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="e.g. baseline +my_trick: run only these (with --resume the others already there are kept)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cloth-rows", type=int, default=1500, help="seeded sample of cloth's 23,486 rows")
    ap.add_argument("--emoji-rows", type=int, default=0, help="seeded sample of emoji's 1,906 rows (0: all)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per run (1: the scores do not depend on the machine's load, and one "
                         "process per dataset can run side by side)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1 epoch of 5 steps, 300 cloth rows")
    ap.add_argument("--resume", action="store_true", help="keep the runs with these settings already in the results")
    args = ap.parse_args()
    max_steps = 0
    if args.quick:
        args.seeds, args.epochs, args.cloth_rows, max_steps = args.seeds[:1], 1, min(args.cloth_rows, 300), 5
        args.emoji_rows = args.emoji_rows or 300
    stem = "tricks_quick" if args.quick else "tricks"
    md_path = RESULTS / f"{stem}.md"

    import torch

    from mmsearch._atomic import atomic_write_text
    from mmsearch.errors import ConfigError

    torch.set_num_threads(args.threads)

    def key(dataset: str, variant: str, seed: int) -> dict:
        """What makes two runs the same run: a run in the results with this key is not trained again."""
        trial = {**BASELINE, "model.max_text_len": DATASETS[dataset]["max_text_len"], **VARIANTS[variant],
                 "train.epochs": args.epochs, "train.max_steps_per_epoch": max_steps, "train.seed": seed}
        return {"dataset": dataset, "variant": variant, "seed": seed, "threads": args.threads,
                "rows": rows(dataset) or "all", "split_seed": SPLIT_SEED, "trial": trial}

    def rows(dataset: str) -> int:
        return args.cloth_rows if dataset == "cloth" else args.emoji_rows

    def all_runs() -> list[dict]:
        """Every dataset's runs (each dataset has its own file: one process per dataset may run at once)."""
        return [r for name in DATASETS if (RESULTS / f"{stem}_{name}.json").is_file()
                for r in json.loads((RESULTS / f"{stem}_{name}.json").read_text())["runs"]]

    skipped = skipped_variants()
    for name, why in skipped.items():
        print(f"skipping {name}: the installed mmsearch rejects its config ({why})", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-tricks-"))
    t_all = time.perf_counter()
    try:
        for dataset in args.datasets:
            json_path = RESULTS / f"{stem}_{dataset}.json"
            runs = []
            if args.resume and json_path.is_file():
                old = json.loads(json_path.read_text())["runs"]
                runs = [r for r in old if "error" not in r and r["variant"] in VARIANTS and r["key"] == key(dataset, r["variant"], r["seed"])]
                print(f"resuming: {len(runs)} runs kept from {json_path}, {len(old) - len(runs)} dropped (errored or other settings)")
            have = [r["key"] for r in runs]

            def save() -> None:
                out = {"benchmark": "bag of tricks: baseline vs baseline + one trick (holdout, paired over seeds)",
                       "settings": {"dataset": dataset, "variants_run": args.variants, "seeds": args.seeds, "epochs": args.epochs,
                                    "max_steps_per_epoch": max_steps, "rows": rows(dataset) or "all", "threads": args.threads,
                                    "split_seed": SPLIT_SEED, "baseline": BASELINE, "variants": VARIANTS},
                       "skipped": skipped, "runs": runs, **environment()}
                atomic_write_text(json_path, json.dumps(out, indent=1) + "\n")
                atomic_write_text(md_path, markdown(all_runs(), skipped))

            todo = [key(dataset, v, s) for s in args.seeds for v in args.variants if v not in skipped]  # seed-major: pairs complete early
            todo = [k for k in todo if k not in have]
            data = prepare_split(dataset, rows(dataset) or None, work) if todo else None
            for i, k in enumerate(todo, 1):
                out = work / f"{dataset}-{k['variant']}-{k['seed']}"
                try:
                    result = one_run(k["trial"], data, out)
                except ConfigError as e:  # e.g. image only on a table without images
                    result = {"not_applicable": str(e)}
                except Exception as e:  # one broken variant must not end a run of hours; recorded, retried on --resume
                    traceback.print_exc()
                    result = {"error": f"{type(e).__name__}: {e}"}
                shutil.rmtree(out, ignore_errors=True)  # checkpoints hold ~100 MB of backbone weights
                runs.append({**{f: k[f] for f in ("dataset", "variant", "seed")}, **result, "key": k})
                save()
                score = result.get("error") or result.get("not_applicable") or f"{result['metric']} {result['holdout']:.4f}, {result['wall_s']:.0f} s"
                print(f"[{dataset} {i}/{len(todo)}] {k['variant']} seed {k['seed']}: {score}", flush=True)
            save()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{markdown(all_runs(), skipped)}\ntotal {time.perf_counter() - t_all:.0f} s; table in {md_path}")


if __name__ == "__main__":
    main()
