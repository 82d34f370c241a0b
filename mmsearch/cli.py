"""mmsearch command line. Heavy libraries (torch, ray) are imported inside commands only."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Iterator

from .layout.remote import is_remote
from .layout.uri import local_path


AUTO_SPACE = Path(__file__).parent / "search_spaces" / "auto.yaml"  # `mmsearch search` without --space

def _pairs(item: str, flag: str) -> tuple[str, str]:
    if "=" not in item:
        raise SystemExit(f"mmsearch: error: {flag} expects KEY=VALUE, got {item!r}")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


def _column_types(items: list[str] | None) -> dict[str, str]:
    """--column-types a=text,b=categorical (repeatable) -> {column: role}."""
    return dict(_pairs(part, "--column-types") for item in items or [] for part in item.split(","))


def _overrides(items: list[str] | None) -> dict:
    """--set key=value (repeatable); values are read as YAML so numbers and booleans keep their type."""
    import yaml

    out = {}
    for k, v in (_pairs(item, "--set") for item in items or []):
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise SystemExit(f"mmsearch: error: --set {k}={v}: the value is not valid YAML ({str(e).splitlines()[0]}); "
                             "quote strings that hold YAML syntax")
    return out


def _table(args) -> tuple[str, str]:
    """(table path, label): a path as given, or a built-in dataset name (fetched once)."""
    from . import datasets

    if Path(args.data).exists() or args.data not in datasets.DATASETS:
        if not args.label:
            raise SystemExit("mmsearch: error: --label is required (the column to predict)")
        return args.data, args.label
    table = datasets.load(args.data)
    return str(table.path), args.label or table.label


def cmd_train(args) -> int:
    from .config import TrialConfig
    from .data.prepare import PreparedData, prepare
    from .errors import ConfigError
    from .layout.checkpoint_dir import TrialRunDir
    from .search.experiment import check_gpus
    from .train.run import run_local, run_ray

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    if args.gpus:
        check_gpus(1, args.address, "--gpus")
    source, label = _table(args)
    explicit = _overrides(args.set)
    cfg = TrialConfig.load(args.config) if args.config else TrialConfig.from_flat({})
    cfg = cfg.with_overrides(explicit)  # every key checked before any output
    out = Path(args.out)
    data_dir = out / "data"
    if data_dir.is_dir():
        data = PreparedData.load(data_dir)
        if data.schema.label != label:
            raise SystemExit(f"mmsearch: error: {out} was prepared for label {data.schema.label!r}; use a new --out")
        print(f"[mmsearch] reusing the prepared data in {data_dir} (resuming if checkpoints exist)")
    else:
        data = prepare(source, label, data_dir, **_prepare_kw(args))
    roles = {r: data.schema.by_role(r) for r in ("image", "text", "categorical", "numeric")}
    print(f"[mmsearch] {data.schema.problem_type}, {len(data.table)} rows "
          f"(train {len(data.split['train'])} / val {len(data.split['val'])} / holdout {len(data.split['holdout'])}); "
          + "; ".join(f"{r}: {', '.join(c)}" for r, c in roles.items() if c))
    if not args.config:  # a first trial sized to the table; --set keys stay as set
        import torch

        from . import defaults

        chosen = defaults.for_table(data, explicit, gpu=args.gpus or (args.workers <= 1 and torch.cuda.is_available()))
        cfg = cfg.with_overrides(defaults.as_overrides(chosen))
        print(f"[mmsearch] {defaults.describe(chosen, len(data.table))}")
    cfg.save(TrialRunDir(out).config_file)
    start = time.perf_counter()
    trial = cfg.to_flat(relevant_only=False)
    if args.workers > 1 or args.gpus:
        final = run_ray(trial, data_dir, out, workers=args.workers, use_gpu=args.gpus, address=args.address)
    else:
        final = run_local(trial, data_dir, out)
    metric = final["metric"]
    print(f"val {metric}: {final[f'val_{metric}']:.4f}   holdout {metric}: {final[f'holdout_{metric}']:.4f}   "
          f"({time.perf_counter() - start:.0f} s; model and predictions in {TrialRunDir(out).final.path})")
    return 0


def _prepare_kw(args) -> dict:
    return dict(column_types=_column_types(args.column_types), problem_type=args.problem_type,
                val_frac=args.val_frac, holdout_frac=args.holdout_frac, seed=args.split_seed, missing_images=args.missing_images)


def cmd_search(args) -> int:
    from dataclasses import fields

    from .search import experiment

    settings = experiment.Settings(**{f.name: getattr(args, f.name) for f in fields(experiment.Settings)})
    experiment.check_gpus(settings.gpus_per_worker, args.address)
    source, label = _table(args)
    exp = experiment.create(source, label, args.space, _storage(args.storage).child(args.name), settings,
                            overrides=_overrides(args.set), **_prepare_kw(args))
    print(f"[mmsearch] experiment {exp}: {settings.num_samples} trials, {settings.searcher} + {settings.scheduler}")
    experiment.run(exp, address=args.address)
    return cmd_status(argparse.Namespace(exp_dir=str(exp)))


def _storage(value: str):
    from .layout.location import Location

    return Location.of(value, "--storage")


@contextlib.contextmanager
def _experiment_here(ref: str) -> Iterator[tuple[Path, object]]:
    """(the experiment's folder to read here, its Location): the folder itself, or, for an
    experiment on object storage, this machine's mirror of it, pulled first; what the command
    wrote there (ensemble, report) is sent back after."""
    from .layout.location import Location
    from .search.experiment import Settings

    loc = Location.of(ref)
    if loc.remote:
        Settings.load(loc)  # a clear error if this is not an experiment, before fetching anything
        start = time.perf_counter()
        fetched = loc.pull()
        print(f"[mmsearch] {loc}: {fetched} files fetched into {loc.local()} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    yield (loc.local() if loc.remote else Path(ref)), loc
    loc.push_outputs()


def cmd_resume(args) -> int:
    from .search import experiment

    experiment.Settings.load(args.exp_dir)  # a clear error if this is not an experiment
    experiment.run(args.exp_dir, address=args.address, restore=True, more=args.more)
    return cmd_status(argparse.Namespace(exp_dir=args.exp_dir))


def cmd_status(args) -> int:
    from .search.experiment import Settings
    from .search.status import leaderboard

    with _experiment_here(args.exp_dir) as (exp, _):
        Settings.load(exp)  # a clear error if this is not an experiment
        print(leaderboard(exp, shown=args.exp_dir))
    return 0


def cmd_ensemble(args) -> int:
    from .ensemble.build import build_ensemble, format_scores
    from .layout.experiment_dir import ExperimentDir
    from .search.pool import skipped_note

    from .ensemble.options import Selection

    with _experiment_here(args.exp_dir) as (exp, loc):
        result = build_ensemble(exp, **{f.name: getattr(args, f.name) for f in dataclasses.fields(Selection)})
    if result["skipped"]:
        print(f"[mmsearch] note: {skipped_note(result['skipped'])}")
    print(format_scores(result))
    members = ", ".join(f"{m['trial_id']} {m['weight']:.3f}" for m in result["members"])
    print(f"members: {members}\nwritten to {loc.shown(ExperimentDir(exp).ensemble_file)}")
    return 0


def cmd_export(args) -> int:
    from .bundle.export import export_bundle
    from .bundle.manifest import MANIFEST
    from .errors import ConfigError

    if is_remote(args.out):
        raise ConfigError(f"--out {args.out}: a bundle is written to a local folder; copy it to object storage after")
    with _experiment_here(args.exp_dir) as (exp, _):
        out = export_bundle(exp, args.out)
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"bundle {out}: {len(files)} files, {size:.1f} MB ({MANIFEST} lists their sha256)")
    return 0


def cmd_predict(args) -> int:
    from .bundle.predictor import Predictor

    start = time.perf_counter()
    predictor = Predictor.load(args.bundle, device=args.device)
    table = predictor.predict_table(args.data, proba=args.proba, batch_size=args.batch_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {len(table)} predictions to {out} ({len(predictor.members)} members, {predictor.device.type}, "
          f"{time.perf_counter() - start:.1f} s)")
    lines = predictor.last_report.lines()
    print("missing-value paths (as in training): " + ("; ".join(lines) if lines else "none"))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, trials=args.trials)
    return 0


def cmd_report(args) -> int:
    from .reporting import write_report

    with _experiment_here(args.exp_dir) as (exp, loc):
        path = write_report(exp, args.out)
    print(loc.shown(path))
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def cmd_tricks(args) -> int:
    from dataclasses import fields

    from .registry import TRICKS

    for name, cls in TRICKS:
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        print(f"{name}: {doc}")
        print(f"  tricks.{name}.enabled = false")
        for f in fields(cls.Config):
            dim = cls.space.get(f.name)
            print(f"  tricks.{name}.{f.name} = {f.default!r}" + (f"    search: {json.dumps(dim)}" if dim else ""))
    return 0


def _ensemble_options(parser: argparse.ArgumentParser) -> None:
    """One flag per field of ensemble.options.Selection (its default, type, choices and help)."""
    from .ensemble.options import Selection

    for f in dataclasses.fields(Selection):
        extra = {k: f.metadata[k] for k in ("type", "choices") if k in f.metadata}
        parser.add_argument("--" + f.name.replace("_", "-"), default=f.default, help=f.metadata["help"], **extra)


def build_parser() -> argparse.ArgumentParser:
    from .search.algorithms import SCHEDULERS, SEARCHERS
    from .search.experiment import RUNNERS, Settings

    default = Settings()  # the search options' defaults: the CLI never restates them
    p = argparse.ArgumentParser(prog="mmsearch", description="Search over the bag of tricks for multimodal AutoML.")
    sub = p.add_subparsers(dest="command", required=True)

    def data_options(sp):
        sp.add_argument("--data", required=True, help="table: .csv, .tsv or .parquet (image paths relative to its folder or "
                        "absolute), or a built-in dataset: emoji, cloth (fetched once into ~/.cache/mmsearch)")
        sp.add_argument("--label", help="the label column (built-in datasets have a default)")
        sp.add_argument("--column-types", action="append", metavar="COL=ROLE[,...]", help="force roles: image, text, categorical, numeric, ignore")
        sp.add_argument("--problem-type", choices=["binary", "multiclass", "regression"])
        sp.add_argument("--missing-images", action="store_true", help="treat image paths that do not exist or are not images as missing")
        sp.add_argument("--val-frac", type=float, default=0.15)
        sp.add_argument("--holdout-frac", type=float, default=0.15)
        sp.add_argument("--split-seed", type=int, default=0)

    t = sub.add_parser("train", help="train one trial (no search) and print its val and holdout scores")
    data_options(t)
    t.add_argument("--config", help="trial config (YAML/JSON, flat dotted keys or nested); without it, defaults sized to "
                   "the table (epochs, image size, early stopping, head lr; printed, and kept in the run's resolved config)")
    t.add_argument("--out", required=True, help="output directory (rerun with the same --out to resume)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--workers", type=int, default=1, help=">1: Ray Train DDP workers on this machine or --address")
    t.add_argument("--gpus", action="store_true", help="one GPU per Ray Train worker")
    t.add_argument("--address", help="an existing Ray cluster")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("search", help="search the space with Ray Tune; trials with several workers train on Ray Train (DDP)")
    data_options(s)
    s.add_argument("--space", default=str(AUTO_SPACE),
                   help="search space YAML (see search_spaces/); default: the packaged auto.yaml (tree and frozen-tower "
                        "members first, then fine-tuned ones with the bag's tricks)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="fix a key on top of the space (repeatable), e.g. --set model.image_size=64 --set train.epochs=2")
    s.add_argument("--name", required=True, help="experiment name: the folder STORAGE/NAME")
    s.add_argument("--storage", default="runs", help="where experiments live: a folder or file:// URI (on a cluster, one "
                   "every node mounts), or object storage: s3://bucket/path, gs://bucket/path (credentials as pyarrow reads "
                   "them; README: On a cluster) (default ./runs)")
    s.add_argument("--num-samples", type=int, default=default.num_samples, help="trials (grid: repeats of the whole grid)")
    s.add_argument("--time-budget-s", type=float, default=default.time_budget_s, help="stop starting trials after this many seconds (0: none)")
    s.add_argument("--searcher", choices=list(SEARCHERS), default=default.searcher)
    s.add_argument("--scheduler", choices=list(SCHEDULERS), default=default.scheduler)
    s.add_argument("--max-concurrent", type=int, default=default.max_concurrent)
    s.add_argument("--workers-per-trial", type=int, default=default.workers_per_trial)
    s.add_argument("--cpus-per-worker", type=float, default=default.cpus_per_worker,
                   help="0: a node's CPUs shared by the concurrent trials' workers (default: %(default)s)")
    s.add_argument("--gpus-per-worker", type=float, default=default.gpus_per_worker)
    s.add_argument("--max-failures", type=int, default=default.max_failures,
                   help="restarts of a trial whose process or node died, from its last epoch checkpoint (default: "
                        "%(default)s; -1: no limit)")
    s.add_argument("--trial-timeout-s", type=float, default=default.trial_timeout_s,
                   help="end a trial that runs longer than this (a hang): it is not retried, `status` shows the cause "
                        "and the pool leaves it out (default 0: no limit)")
    s.add_argument("--runner", choices=list(RUNNERS), default=default.runner,
                   help="auto: a one-worker trial trains in its Tune trial process, several workers run under Ray Train "
                        "(DDP); ray-train: every trial runs under Ray Train")
    s.add_argument("--address", help="an existing Ray cluster (its head must advertise the trial_slot resource)")
    s.add_argument("--seed", type=int, default=default.seed)
    s.set_defaults(fn=cmd_search)

    r = sub.add_parser("resume", help="continue an interrupted search (finished trials are kept), or extend it (--more)",
                       description="Continue an interrupted search, or extend it. Resume goes through Ray Tune's restore, "
                       "which unpickles the Tune state saved in the experiment (tuner.pkl, searcher state): unpickling runs "
                       "code, so resume only experiments you trust, as with Ray itself. status, ensemble, export and "
                       "predict read no pickle and are safe on any experiment or bundle.")
    r.add_argument("exp_dir")
    r.add_argument("--address")
    r.add_argument("--more", type=int, default=0, metavar="N",
                   help="then extend the search by N new trials (TPE keeps its history; a grid has none to add)")
    r.set_defaults(fn=cmd_resume)

    st = sub.add_parser("status", help="the leaderboard of an experiment (no cluster needed)")
    st.add_argument("exp_dir")
    st.set_defaults(fn=cmd_status)

    e = sub.add_parser("ensemble", help="pick ensemble members on val; print val and holdout scores of the ensemble, "
                       "the best single trial and the uniform average; write the ensemble into EXP_DIR (what export reads)")
    e.add_argument("exp_dir")
    _ensemble_options(e)
    e.set_defaults(fn=cmd_ensemble)

    x = sub.add_parser("export", help="write the ensemble as a self-contained bundle (manifest + safetensors)")
    x.add_argument("exp_dir")
    x.add_argument("--out", required=True, help="the bundle directory (must not exist, or be empty)")
    x.set_defaults(fn=cmd_export)

    pr = sub.add_parser("predict", help="score a table with a bundle (no Ray needed); write a CSV of predictions")
    pr.add_argument("bundle")
    pr.add_argument("--data", required=True, help="table: .csv, .tsv or .parquet; image paths relative to its folder")
    pr.add_argument("--out", required=True, help="predictions CSV: a `prediction` column, rows in the table's order")
    pr.add_argument("--proba", action="store_true", help="add one proba_<class> column per class")
    pr.add_argument("--batch-size", type=int, help="rows per batch (default: each member's in-search batch size)")
    pr.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pr.set_defaults(fn=cmd_predict)

    d = sub.add_parser("demo", help="the whole job on the emoji table, on CPU: search, ensemble, export, predict on the "
                       "test rows, a table of scores and the report page (about 11 min on 2 cores)")
    d.add_argument("--out", default="runs/demo", help="the demo's experiment folder (rerun to continue an interrupted demo)")
    d.add_argument("--trials", type=int, default=8)
    d.set_defaults(fn=cmd_demo)

    rp = sub.add_parser("report", help="one HTML page: summary, leaderboard, learning curves, which tricks helped "
                        "(with 95 %% intervals), the ensemble's members, per modality; works while the search runs")
    rp.add_argument("exp_dir")
    rp.add_argument("--out", help="the HTML file (default: EXP_DIR/report.html)")
    rp.add_argument("--open", action="store_true", help="open it in a browser")
    rp.set_defaults(fn=cmd_report)

    k = sub.add_parser("tricks", help="list the registered tricks, their config keys and search dimensions")
    k.set_defaults(fn=cmd_tricks)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    from .errors import DataWarning, MMSearchError

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):  # already says where and what to do: one line
            print(f"mmsearch: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    shown, warnings.showwarning = warnings.showwarning, show
    try:
        if getattr(args, "exp_dir", None) and not is_remote(args.exp_dir):  # a path, or a file:// URI
            args.exp_dir = str(local_path(args.exp_dir, "the experiment"))
        return args.fn(args)
    except MMSearchError as e:
        print(f"mmsearch: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
