"""Trial states (RUNNING / TERMINATED / ERROR and the error's cause) for the report: the one place
the report asks for them, so the function it calls can change in one line.

`mmsearch.search.status` owns reading Tune's saved state; its reader is being rewritten to read
JSON only (as `trial_states`, same return shape). Until that lands the report falls back to the
old private name. Either way: trial id -> {state, error, time_s, epoch, config}."""
from __future__ import annotations

from pathlib import Path


def trial_states(exp_dir: Path) -> dict[str, dict]:
    from ..search import status

    read = getattr(status, "trial_states", None) or status._tune_states
    return read(Path(exp_dir))
