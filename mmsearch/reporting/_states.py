"""Trial states (RUNNING / TERMINATED / ERROR and the error's cause) for the report: the one place
the report asks for them. `mmsearch.search.status.trial_states` reads Tune's saved state as plain
JSON (never unpickling): trial id -> {state, error, time_s, epoch, config}."""
from __future__ import annotations

from pathlib import Path


def trial_states(exp_dir: Path) -> dict[str, dict]:
    from ..search.status import trial_states as read

    return read(Path(exp_dir))
