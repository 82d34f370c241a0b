"""Experiment + its ensemble -> a self-contained bundle directory:

    BUNDLE/manifest.json                        schema, preprocessing state, problem type, metric,
                                                classes, members (weight, resolved config), the
                                                ensemble's score table, package versions, sha256s
    BUNDLE/members/TRIAL_ID/model.safetensors   the member's weights (its final checkpoint)
    BUNDLE/members/TRIAL_ID/config.json         its resolved trial config (also in the manifest)

Everything is JSON or safetensors: loading a bundle never unpickles anything. The bundle is
written to a temporary sibling directory and renamed into place, so a crash leaves no half bundle.
No torch, no Ray.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from ..config import OptimConfig  # not TrialConfig: its registries would import torch
from ..ensemble.build import build_ensemble, format_scores, load_ensemble
from ..search.pool import load_pool
from .manifest import FORMAT, FORMAT_VERSION, BundleError, write_manifest

# the packages whose versions decide what a bundle computes
PACKAGES = ("mmsearch", "torch", "numpy", "pandas", "pyarrow", "pillow", "safetensors", "timm", "transformers",
            "tokenizers", "open_clip_torch", "rtdl_revisiting_models")


def export_bundle(exp_dir: str | Path, out: str | Path, *, log=print) -> Path:
    exp, out = Path(exp_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} exists and is not empty; choose a new --out")
    for name in ("schema.json", "preprocess.json"):
        if not (exp / "data" / name).is_file():
            raise BundleError(f"{exp} is not an mmsearch experiment (no data/{name})")
    ensemble = load_ensemble(exp)
    if ensemble is None:
        log(f"[mmsearch] {exp} has no ensemble yet: building one with the defaults (`mmsearch ensemble {exp}`)")
        ensemble = build_ensemble(exp)
        log(format_scores(ensemble))
    elif (now := len(load_pool(exp))) != ensemble["pool"]:
        log(f"[mmsearch] note: the ensemble was chosen among {ensemble['pool']} trials; the experiment now has {now} "
            f"with predictions (`mmsearch ensemble {exp}` again to consider them)")
    schema = json.loads((exp / "data" / "schema.json").read_text())
    preprocess = json.loads((exp / "data" / "preprocess.json").read_text())

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        members = [_copy_member(exp, m, tmp, _workers_per_trial(exp)) for m in ensemble["members"]]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source_experiment": str(exp.resolve()),
            "problem_type": schema["problem_type"],
            "label": schema["label"],
            "classes": schema["classes"],
            "metric": ensemble["metric"],
            "schema": schema,
            "preprocess": preprocess,
            "ensemble": {k: ensemble[k] for k in ("method", "size", "selected_on", "pool", "scores")},
            "members": members,
            "versions": {"python": sys.version.split()[0], **{p: _version(p) for p in PACKAGES}},
            "files": [f for m in members for f in (m["weights"], m["config_file"])],
        }
        write_manifest(tmp, manifest)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _copy_member(exp: Path, member: dict, bundle: Path, workers: int) -> dict:
    ckpt = exp / member["checkpoint"]
    missing = [f for f in ("model.safetensors", "config.json", "trainer.json") if not (ckpt / f).is_file()]
    if missing:
        raise BundleError(f"member {member['trial_id']}: {ckpt} lacks {', '.join(missing)} (the trial's checkpoints changed "
                          f"after the ensemble was built); run `mmsearch ensemble {exp}` again")
    rel = f"members/{member['trial_id']}"
    (bundle / rel).mkdir(parents=True)
    shutil.copyfile(ckpt / "model.safetensors", bundle / rel / "model.safetensors")
    shutil.copyfile(ckpt / "config.json", bundle / rel / "config.json")
    config = json.loads((ckpt / "config.json").read_text())
    trainer = json.loads((ckpt / "trainer.json").read_text())
    world = (trainer.get("final_metrics") or {}).get("world_size") or workers
    return {
        "trial_id": member["trial_id"],
        "weight": member["weight"],
        "config": config,
        # the batch size the trial's own val/holdout predictions were computed with; predicting
        # in the same batches reproduces them bit for bit
        "eval_batch_size": OptimConfig(batch_size=int(config["optim.batch_size"])).eval_batch(int(world)),
        "weights": f"{rel}/model.safetensors",
        "config_file": f"{rel}/config.json",
    }


def _workers_per_trial(exp: Path) -> int:
    """From the experiment's settings (for trials stopped early, whose reports lack world_size)."""
    try:
        return int(json.loads((exp / "experiment.json").read_text()).get("workers_per_trial", 1))
    except (OSError, ValueError):
        return 1


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
