"""Chaos: kill the search driver, and the trials' training processes, at random moments; count
what is lost (issue 14).

1. **Driver kills.** A grid search of N small trials (tiny random towers on a synthetic table, 3
   epochs each, one trial at a time) is started with `mmsearch search`, SIGKILLed (the driver and
   its local Ray: the whole process group) at a random moment, then continued with `mmsearch
   resume`, killed again, ... K times, then resumed to the end. Counted: finished trials lost
   (finished before a kill, not finished at the end or gone; goal 0), finished trials rerun (their
   final checkpoint rewritten, or an epoch reported twice; goal 0), trials resumed from an epoch
   checkpoint (interrupted after one, then finished with no epoch trained twice), epochs trained
   twice, and the wall time lost per kill against the same search run once without kills.
2. **Trial kills.** The same search with `--max-failures` high enough, its trial process
   (Tune's `ImplicitFunc` actor) SIGKILLed K times at random moments: every trial must finish,
   and each restart continues from the last epoch checkpoint (no epoch trained twice).

    .venv/bin/python benchmarks/bench_chaos.py [--kills 10] [--trials 24]

Writes benchmarks/results/chaos.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from _common import environment

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # random tiny towers (no pretrained weights): what is measured is bookkeeping, not quality
    "model.image": "timm", "encoder.timm.model_name": "test_efficientnet", "encoder.timm.pretrained": False,
    "model.text": "tiny_text", "model.tabular": "ft_transformer", "encoder.ft_transformer.n_blocks": 1,
    "encoder.ft_transformer.d_block": 32, "encoder.ft_transformer.attention_n_heads": 4,
    "model.image_size": 32, "model.max_text_len": 16, "optim.batch_size": 16, "train.epochs": 3,
}


def _space(work: Path, trials: int) -> Path:
    space = work / "space.yaml"
    lrs = [float(f"{v:.3e}") for v in [3e-3 * 0.9**i for i in range(trials)]]
    space.write_text(yaml.safe_dump({"fixed": TINY, "search": {"optim.lr": {"grid": lrs}}}))
    return space


def _search_cmd(table: Path, space: Path, storage: Path, name: str, max_failures: int) -> list[str]:
    return [sys.executable, "-m", "mmsearch.cli", "search", "--data", str(table), "--label", "label", "--space", str(space),
            "--name", name, "--storage", str(storage), "--searcher", "grid", "--scheduler", "fifo", "--num-samples", "1",
            "--max-failures", str(max_failures)]


def _run(cmd: list[str], log: Path, kill_after: float | None = None) -> tuple[float, bool]:
    """(seconds, killed): run cmd in its own process group, SIGKILL the group after kill_after s."""
    t0 = time.perf_counter()
    with log.open("a") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            p.wait(timeout=kill_after)
            return time.perf_counter() - t0, False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the driver and the local Ray it started (its process group)
            p.wait()
            return time.perf_counter() - t0, True


def _trials(exp: Path) -> dict[str, dict]:
    """trial id -> {epochs reported (metrics.jsonl, in order), finished, final checkpoint mtime}."""
    out = {}
    for run in sorted((exp / "train").glob("*")) if (exp / "train").is_dir() else []:
        log = run / "metrics.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
        final = run / "final" / "trainer.json"
        out[run.name] = {"epochs": [r["epoch"] for r in rows], "finished": final.is_file(),
                         "final_mtime": final.stat().st_mtime if final.is_file() else None}
    return out


def driver_kills(work: Path, table: Path, trials: int, kills: int, rng: random.Random) -> dict:
    space = _space(work, trials)
    storage = work / "runs"
    reference_s, _ = _run(_search_cmd(table, space, storage, "reference", 0), work / "reference.log")
    exp = storage / "chaos"
    seen_finished: dict[str, float] = {}
    interrupted_with_checkpoint: set[str] = set()
    total_s, log = 0.0, work / "chaos.log"
    for k in range(kills):
        cmd = _search_cmd(table, space, storage, "chaos", 0) if k == 0 else [sys.executable, "-m", "mmsearch.cli", "resume", str(exp)]
        # a random moment 10-30 s into the run (Ray's start-up takes ~10 s): start-up, mid-epoch,
        # mid-checkpoint, between trials; the search is long enough to outlast the kills
        seconds, killed = _run(cmd, log, kill_after=rng.uniform(10, 30))
        total_s += seconds
        state = _trials(exp)
        for tid, t in state.items():
            if t["finished"]:
                seen_finished.setdefault(tid, t["final_mtime"])
            elif t["epochs"]:
                interrupted_with_checkpoint.add(tid)
        print(f"kill {k + 1}/{kills} after {seconds:.1f} s{'' if killed else ' (the search had ended)'}: "
              f"{sum(t['finished'] for t in state.values())}/{trials} trials finished", flush=True)
    seconds, _ = _run([sys.executable, "-m", "mmsearch.cli", "resume", str(exp)], log)
    total_s += seconds
    final = _trials(exp)
    twice = {tid: len(t["epochs"]) - len(set(t["epochs"])) for tid, t in final.items()}
    return {
        "trials": trials, "kills": kills,
        "finished_at_end": sum(t["finished"] for t in final.values()),
        "finished_trials_lost": sum(1 for tid in seen_finished if not final.get(tid, {}).get("finished")),
        "finished_trials_rerun": sum(1 for tid, m in seen_finished.items() if final.get(tid, {}).get("final_mtime") != m),
        "trials_resumed_from_a_checkpoint": sum(1 for tid in interrupted_with_checkpoint
                                                if final.get(tid, {}).get("finished") and not twice.get(tid)),
        "epochs_trained_twice": sum(twice.values()),
        "reference_s": round(reference_s, 1), "with_kills_s": round(total_s, 1),
        "seconds_lost_per_kill": round((total_s - reference_s) / kills, 1),
    }


def trial_kills(work: Path, table: Path, trials: int, kills: int, rng: random.Random) -> dict:
    space = _space(work, trials)
    exp = work / "runs" / "trial_kills"
    log = (work / "trial_kills.log").open("a")
    driver = subprocess.Popen(_search_cmd(table, space, work / "runs", "trial_kills", kills + 1), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    done = 0
    while done < kills and driver.poll() is None:
        time.sleep(rng.uniform(2, 8))
        pids = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline") if _is_trial(p, driver.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                done += 1
            except ProcessLookupError:
                pass
    driver.wait(timeout=1800)
    final = _trials(exp)
    return {"kills": done, "search_exit": driver.returncode, "trials": trials,
            "finished_at_end": sum(t["finished"] for t in final.values()),
            "epochs_trained_twice": sum(len(t["epochs"]) - len(set(t["epochs"])) for t in final.values())}


def _is_trial(cmdline: Path, driver: int) -> bool:
    """A Tune trial process of this search: a descendant of its driver (the driver starts the local
    Ray, whose raylet starts the workers), not another search's on the machine."""
    try:
        if "ray::ImplicitFunc" not in cmdline.read_bytes().decode(errors="replace"):
            return False
        pid = int(cmdline.parent.name)
        while pid > 1:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the parent
            if pid == driver:
                return True
        return False
    except (OSError, ValueError, IndexError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/mmsearch-bench-chaos")
    args = ap.parse_args()
    from mmsearch.data.synthetic import make_synthetic

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    table = make_synthetic(work / "table", n=480, seed=0)
    rng = random.Random(args.seed)
    result = {"driver_kills": driver_kills(work, table, args.trials, args.kills, rng)}
    print(json.dumps(result["driver_kills"]), flush=True)
    result["trial_kills"] = trial_kills(work, table, args.trials, args.kills, rng)
    print(json.dumps(result["trial_kills"]), flush=True)
    out = ROOT / "benchmarks" / "results" / "chaos.json"
    out.write_text(json.dumps({**result, **environment()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
