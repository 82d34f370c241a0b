"""Experiment + its ensemble -> a self-contained bundle directory:

    BUNDLE/manifest.json                        schema, preprocessing state, problem type, metric,
                                                classes, members (weight, resolved config), the
                                                ensemble's score table, package versions, sha256s
    BUNDLE/members/TRIAL_ID/model.safetensors   the member's weights (its final checkpoint)
    BUNDLE/members/TRIAL_ID/config.json         its resolved trial config (also in the manifest)

Everything is JSON or safetensors: loading a bundle never unpickles anything. The bundle is
written to a temporary sibling directory and renamed into place, so a crash leaves no half bundle.
No torch, no Ray. (The experiment's files are read through mmsearch.layout.)
"""
from __future__ import annotations

import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from .._atomic import atomic_dir
from ..config import OptimConfig  # not TrialConfig: its registries would import torch
from ..ensemble.build import build_ensemble, format_scores, load_ensemble
from ..errors import MMSearchError
from ..layout.checkpoint_dir import CheckpointDir
from ..layout.experiment_dir import ExperimentDir
from ..search.pool import read_pool
from .manifest import FORMAT, FORMAT_VERSION, BundleError, write_manifest
from .signature import SIGNATURE, SIGNING_KEY_ENV, sign

# the packages whose versions decide what a bundle computes
PACKAGES = ("mmsearch", "torch", "numpy", "pandas", "pyarrow", "pillow", "safetensors", "timm", "transformers",
            "tokenizers", "open_clip_torch", "rtdl_revisiting_models")
MEMBER_WEIGHTS, MEMBER_CONFIG = "model.safetensors", "config.json"  # in BUNDLE/members/TRIAL_ID/


def export_bundle(exp_dir: str | Path, out: str | Path, *, log=print) -> Path:
    exp, out = ExperimentDir(exp_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} exists and is not empty; choose a new --out")
    if not exp.data.is_dir():
        raise BundleError(f"{exp.path} is not an mmsearch experiment (no {exp.data.name}/ folder)")
    from ..data.prepare import read_state  # pandas: only when exporting

    schema, preprocess = read_state(exp.data)
    ensemble = load_ensemble(exp.path)
    if ensemble is None:
        log(f"[mmsearch] {exp.path} has no ensemble yet: building one with the defaults (`mmsearch ensemble {exp.path}`)")
        ensemble = build_ensemble(exp.path)
        log(format_scores(ensemble))
    elif (now := len(read_pool(exp.path).entries)) != ensemble["pool"]:
        log(f"[mmsearch] note: the ensemble was chosen among {ensemble['pool']} trials; the experiment now has {now} "
            f"with predictions (`mmsearch ensemble {exp.path}` again to consider them)")

    workers = _workers_per_trial(exp)
    with atomic_dir(out) as tmp:  # a crash leaves no half bundle
        members = [_copy_member(exp, m, tmp, workers) for m in ensemble["members"]]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source_experiment": str(exp.path.resolve()),
            "problem_type": schema["problem_type"],
            "label": schema["label"],
            "classes": schema["classes"],
            "metric": ensemble["metric"],
            "schema": schema,
            "preprocess": preprocess,
            # "selection": how members were picked (absent from ensembles built before the options existed)
            "ensemble": {k: ensemble[k] for k in ("method", "size", "selection", "selected_on", "pool", "scores")
                         if k in ensemble},
            "members": members,
            "versions": {"python": sys.version.split()[0], **{p: _version(p) for p in PACKAGES}},
            "files": [f for m in members for f in (m["weights"], m["config_file"])],
        }
        if sign(tmp, write_manifest(tmp, manifest)):
            log(f"[mmsearch] signed the manifest ({SIGNATURE}) with the key in {SIGNING_KEY_ENV}")
    return out


def _copy_member(exp: ExperimentDir, member: dict, bundle: Path, workers: int) -> dict:
    ckpt = CheckpointDir(exp.path / str(member.get("checkpoint")))
    if not ckpt.path.resolve().is_relative_to(exp.train.resolve()):
        raise BundleError(f"{exp.ensemble_file}: member {member.get('trial_id')!r} names checkpoint "
                          f"{member.get('checkpoint')!r}, which is not under {exp.train}; run `mmsearch ensemble {exp.path}` again")
    if problem := ckpt.problem():
        raise BundleError(f"member {member['trial_id']}: {problem} (the trial's checkpoints changed after the ensemble "
                          f"was built); run `mmsearch ensemble {exp.path}` again")
    rel = f"members/{member['trial_id']}"
    (bundle / rel).mkdir(parents=True)
    shutil.copyfile(ckpt.weights, bundle / rel / MEMBER_WEIGHTS)
    shutil.copyfile(ckpt.config_file, bundle / rel / MEMBER_CONFIG)
    config, trainer = ckpt.config(), ckpt.trainer()
    world = (trainer.get("final_metrics") or {}).get("world_size") or workers
    return {
        "trial_id": member["trial_id"],
        "weight": member["weight"],
        "config": config,
        # the batch size the trial's own val/holdout predictions were computed with; predicting
        # in the same batches reproduces them bit for bit
        "eval_batch_size": OptimConfig(batch_size=int(config["optim.batch_size"])).eval_batch(int(world)),
        "weights": f"{rel}/{MEMBER_WEIGHTS}",
        "config_file": f"{rel}/{MEMBER_CONFIG}",
    }


def _workers_per_trial(exp: ExperimentDir) -> int:
    """From the experiment's settings (for trials stopped early, whose reports lack world_size)."""
    try:
        return int((exp.read_settings() or {}).get("workers_per_trial", 1))
    except (MMSearchError, TypeError, ValueError):
        return 1


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
