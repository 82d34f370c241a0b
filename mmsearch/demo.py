"""`mmsearch demo`: the whole job on real data, offline after the first fetch, on a CPU.

emoji (image + text + tabular) -> a small search (search_spaces/auto.yaml, the default space: the
packaged Lite0, MiniLM and FT-Transformer; tree and frozen-tower members first, then fine-tuned
ones; TPE + ASHA) -> a Caruana ensemble chosen on val -> an exported bundle
-> the bundle's predictions on the test (holdout) rows -> one table -> the report (one HTML page:
which tricks helped, the ensemble's members, learning curves). Rerunning it with the same
--out continues an interrupted demo (finished trials are kept) and rebuilds the rest.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .layout.experiment_dir import ExperimentDir
from .search.pool import read_pool, skipped_note
from .search.status import tricks_on

SPACE = Path(__file__).parent / "search_spaces" / "auto.yaml"
STEPS = 6


def _say(message: str) -> None:
    print(message, flush=True)


def run_demo(out: str | Path = "runs/demo", *, trials: int = 8, table=None, space: str | Path = SPACE, log=_say) -> dict:
    """table: a mmsearch.datasets.TableDataset (default: emoji); space: the search space file."""
    from . import datasets
    from .bundle.export import export_bundle
    from .bundle.predictor import load_bundle
    from .data.prepare import PreparedData
    from .ensemble.build import build_ensemble, format_scores
    from .reporting import write_report
    from .search import experiment

    out, t0 = Path(out), time.perf_counter()

    def step(i: int, what: str) -> None:
        log(f"\n[demo {i}/{STEPS}] {what}  ({_clock(time.perf_counter() - t0)} so far)")

    step(1, "data: " + (table.description if table else "the emoji table"))
    table = table or datasets.load_emoji()
    log(f"  {table.path}: {table.description}")

    layout = ExperimentDir(out)
    resuming = layout.settings_file.is_file()
    step(2, f"search: {trials} trials on {Path(space).name}, TPE + ASHA, one trial at a time"
            + (f" (continuing {out})" if resuming else ""))
    if not resuming:
        settings = experiment.Settings(searcher="tpe", scheduler="asha", num_samples=trials, max_concurrent=1)
        experiment.create(str(table.path), table.label, space, out, settings, problem_type=table.problem_type)
    try:
        experiment.run(out, restore=resuming and bool(experiment.tune_runs(out)))
    finally:
        import ray

        ray.shutdown()

    step(3, "ensemble: Caruana selection on val")
    ens = build_ensemble(out)
    if ens["skipped"]:
        log(f"  note: {skipped_note(ens['skipped'])}")
    log(format_scores(ens))

    step(4, "export: the ensemble as a bundle that predicts without Ray")
    bundle = out / "bundle"
    if bundle.exists():  # our own output from an earlier run: the ensemble may have changed
        shutil.rmtree(bundle)
    export_bundle(out, bundle, log=log)

    step(5, "predict: the bundle on the test rows")
    test = PreparedData.load(layout.data).rows("holdout")
    scores = load_bundle(bundle).evaluate(test)

    metric = ens["metric"]
    pool = read_pool(out).entries  # trials left out were named by the ensemble step
    log(f"\n{_trial_table(pool, metric)}\n")
    best = ens["scores"]["best_single"]
    summary = {
        "metric": metric,
        "test_rows": scores["rows"],
        "ensemble_test": scores[metric],
        "best_single_test": best["holdout"],
        "best_single_trial": best["trial_id"],
        "uniform_test": ens["scores"]["uniform"]["holdout"],
        "members": len(ens["members"]),
        "trials": len(pool),
        "bundle": str(bundle),
        "wall_s": time.perf_counter() - t0,
    }
    log(f"test {metric} ({summary['test_rows']} rows):  ensemble {summary['ensemble_test']:.4f} "
        f"({summary['members']} of {summary['trials']} trials)  |  best single trial {summary['best_single_test']:.4f} "
        f"({summary['best_single_trial']})  |  uniform average {summary['uniform_test']:.4f}")
    log(f"bundle: {bundle}   (mmsearch predict {bundle} --data TABLE --out predictions.csv)")

    step(6, "report: which tricks helped, the ensemble's members, learning curves")
    summary["report"] = str(write_report(out))
    log(f"report: {summary['report']}   (open it in a browser; `mmsearch report {out}` rewrites it)")
    summary["wall_s"] = time.perf_counter() - t0
    log(f"done in {_clock(summary['wall_s'])}")
    return summary


def _trial_table(pool, metric: str) -> str:
    head = f"{'trial':<24} {'epochs':>6} {'val ' + metric:>14} {'test ' + metric:>14}  tricks"
    lines = [head]
    for e in pool:  # best val first
        done = "" if e.finished else " (stopped early)"
        lines.append(f"{e.trial_id:<24} {e.epoch:>6} {e.val_metric:>14.4f} {e.last[f'holdout_{metric}']:>14.4f}  {tricks_on(e.config)}{done}")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
