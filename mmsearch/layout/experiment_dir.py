"""An experiment directory: the one place its file names live.

    EXP/experiment.json           the search settings (what `mmsearch resume` needs to continue)
    EXP/space.yaml                the search space, copied
    EXP/data/                     the table prepared once (inside: mmsearch.data.prepare)
    EXP/tune/, tune_2/, ...       Ray Tune's runs: the search, then each extension of it
    EXP/train/TRIAL_ID/           each trial's run directory (layout.checkpoint_dir.TrialRunDir)
    EXP/ensemble/ensemble.json    the ensemble `mmsearch ensemble` chose
    EXP/report.html               `mmsearch report`'s page (unless --out says otherwise)

Files that another process may read while they are rewritten go through mmsearch._atomic.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .._atomic import atomic_write_text
from ..errors import MMSearchError
from ._json import read_object
from .checkpoint_dir import TrialRunDir

_TUNE = "tune"


@dataclass(frozen=True)
class ExperimentDir:
    path: Path
    TRAIN: ClassVar[str] = "train"

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def settings_file(self) -> Path:
        return self.path / "experiment.json"

    @property
    def space_file(self) -> Path:
        return self.path / "space.yaml"

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def train(self) -> Path:
        """Where trial run directories live (Ray Train's storage_path for multi-worker trials)."""
        return self.path / self.TRAIN

    @property
    def ensemble_file(self) -> Path:
        return self.path / "ensemble" / "ensemble.json"

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    def outputs(self) -> tuple[Path, ...]:
        """What the commands write into the experiment after the search (ensemble, report)."""
        return self.ensemble_file.parent, self.report_file

    def trial_run(self, trial_id: str) -> TrialRunDir:
        return TrialRunDir(self.train / trial_id)

    def trial_runs(self) -> list[TrialRunDir]:
        """Every trial that has a run directory, by trial id."""
        found = sorted(p for p in self.train.iterdir() if p.is_dir()) if self.train.is_dir() else []
        return [TrialRunDir(p) for p in found]

    def tune_runs(self) -> list[Path]:
        """The Tune runs in order: tune, tune_2, tune_3, ..."""
        return [self.path / n for n in self.tune_run_order(p.name for p in self.path.glob(f"{_TUNE}*") if p.is_dir())]

    @staticmethod
    def tune_run_order(names) -> list[str]:
        """The names of Tune runs among folder names, in order."""
        return sorted((n for n in names if _tune_index(n) is not None), key=_tune_index)

    def next_tune_run(self) -> str:
        """The name of the Tune run that extends the search next."""
        runs = self.tune_runs()
        return self.next_run_name(runs[-1].name if runs else None)

    @staticmethod
    def next_run_name(last: str | None) -> str:
        """The Tune run after the one named `last` (None: the first)."""
        return f"{_TUNE}_{_tune_index(last) + 1}" if last else _TUNE

    # -- settings and ensemble: read while rewritten, so written atomically ---------------------
    def write_settings(self, settings: dict) -> None:
        atomic_write_text(self.settings_file, json.dumps(settings, indent=1))

    def read_settings(self) -> dict | None:
        """None if this is not an experiment (no settings file)."""
        return read_object(self.settings_file, MMSearchError, "`mmsearch search` writes it; create the experiment again")

    def write_ensemble(self, content: dict) -> None:
        atomic_write_text(self.ensemble_file, json.dumps(content, indent=1))

    def read_ensemble(self) -> dict | None:
        """None if no ensemble has been built yet."""
        return read_object(self.ensemble_file, MMSearchError, f"run `mmsearch ensemble {self.path}` again")


def _tune_index(name: str) -> int | None:
    """tune -> 1, tune_N -> N, anything else -> None."""
    if name == _TUNE:
        return 1
    head, _, n = name.partition("_")
    return int(n) if head == _TUNE and n.isdigit() else None
