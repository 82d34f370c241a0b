"""Where an experiment lives: a local folder (a path or a file:// URI, which may be a shared file
system), or a folder on object storage (layout.remote) that this machine works on through mirrors.

Everything that reads or writes an experiment's files goes through a Location, so the same code
serves both; for a local folder pull and push do nothing. Who syncs what, on object storage:

    the search's driver   pushes the experiment it created (settings, space, prepared table);
                          Ray Tune writes its runs (tune/, tune_2/, ...) to the URI itself
    a trial               pulls the prepared table once per node ("node" mirror), pulls its own
                          run directory (an earlier attempt may have run elsewhere) and pushes it
                          after each checkpoint and each failure record
    a Ray Train run       writes its checkpoints to the URI itself (storage_path)
    a command             pulls the experiment ("view" mirror), less resume state, then pushes
                          what it wrote (ensemble/, report.html)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .._atomic import file_lock
from .experiment_dir import ExperimentDir
from .checkpoint_dir import CheckpointDir, TrialRunDir
from .remote import RemoteDir, basename, is_remote, join
from .uri import local_path

# what a command never needs: resume-only state (twice the weights with Adam) and each node's
# own cache of frozen encodings
_FEATURES = "data/features/"
_PULLED = ".pulled"  # in a node's copy of data/: the whole table is here


def _not_for_commands(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1] in CheckpointDir.RESUME_STATE or rel.startswith(_FEATURES)


@dataclass(frozen=True)
class Location:
    ref: str                  # an absolute path, or the URI
    remote: RemoteDir | None  # None: a local folder

    @classmethod
    def of(cls, value, flag: str = "the experiment") -> "Location":
        if isinstance(value, Location):
            return value
        if is_remote(value):
            uri = str(value).rstrip("/")
            return cls(uri, RemoteDir(uri))
        return cls(str(Path(local_path(value, flag)).resolve()), None)

    def child(self, name: str) -> "Location":
        return Location.of(join(self.ref, name) if self.remote else str(Path(self.ref) / name))

    def __str__(self) -> str:
        return self.ref

    def shown(self, path: Path) -> str:
        """A path of the view mirror, as the user knows it (a URI); other paths as they are."""
        local = self.local()
        if not self.remote or not path.is_relative_to(local):
            return str(path)
        return join(self.ref, path.relative_to(local).as_posix())

    def local(self, role: str = "view") -> Path:
        """The folder to read and write here: the experiment itself, or this machine's mirror of it."""
        return self.remote.mirror(role) if self.remote else Path(self.ref)

    def layout(self, role: str = "view") -> ExperimentDir:
        return ExperimentDir(self.local(role))

    def storage_path(self, *parts: str) -> str:
        """What Ray Tune and Ray Train are given as storage_path (they write to URIs themselves)."""
        return join(self.ref, *parts) if self.remote else str(Path(self.ref, *parts))

    # -- commands (the "view" mirror) ------------------------------------------------------------
    def pull(self, sub: str = "") -> int:
        """Bring the experiment (or its folder `sub`) here, less resume state; the files fetched."""
        if not self.remote:
            return 0
        if not sub:
            return self.remote.pull(self.local(), skip=_not_for_commands)
        return self.remote.child(sub).pull(self.local() / sub, skip=lambda rel: _not_for_commands(f"{sub}/{rel}"))

    def pull_files(self, *names: str) -> None:
        """Bring single files of the experiment's top level here (settings, space)."""
        if self.remote:
            self.remote.pull(self.local(), skip=lambda rel: rel not in names, delete=False)

    def push(self) -> None:
        """Send the whole mirror (the driver, once it has created the experiment: nobody reads it yet)."""
        if self.remote:
            self.remote.push(self.local(), unread=True)

    def push_outputs(self) -> None:
        """Send what the commands write into the experiment (its ensemble, its report)."""
        if self.remote:
            local = self.local()
            outputs = [p.relative_to(local).as_posix() for p in self.layout().outputs()]
            self.remote.push(local, skip=lambda rel: not any(rel == o or rel.startswith(o + "/") for o in outputs),
                             delete=False)

    def exists(self, name: str) -> bool:
        return self.remote.exists(name) if self.remote else (Path(self.ref) / name).exists()

    def tune_runs(self) -> list[str]:
        """The experiment's Tune runs in order (tune, tune_2, ...), as paths or URIs."""
        if not self.remote:
            return [str(p) for p in ExperimentDir(Path(self.ref)).tune_runs()]
        names = ExperimentDir.tune_run_order(self.remote.list_dirs())
        return [join(self.ref, n) for n in names]

    def next_tune_run(self) -> str:
        """The name of the Tune run that extends the search next."""
        runs = self.tune_runs()
        return ExperimentDir.next_run_name(self.name_of(runs[-1]) if runs else None)

    def name_of(self, ref: str) -> str:
        """The folder name of a path or URI that tune_runs gave."""
        return basename(ref) if self.remote else Path(ref).name

    def remove(self, ref: str) -> None:
        """Remove a folder of the experiment given as tune_runs gives it."""
        if self.remote:
            RemoteDir(ref).delete()
        else:
            shutil.rmtree(ref)

    # -- trials (the "node" mirror) --------------------------------------------------------------
    def trial_data(self) -> Path:
        """The prepared table on this node: pulled once per node (it never changes). The copy
        records which upload of the table it is, so an experiment created anew at the same URI
        is pulled anew, its node's cached encodings with it."""
        data = self.layout("node").data
        if self.remote:
            table = self.remote.child("data")
            with file_lock(data.parent / ".data.lock"):
                upload = table.signature()
                marker = data / _PULLED
                if not marker.is_file() or marker.read_text() != upload:
                    shutil.rmtree(data, ignore_errors=True)
                    table.pull(data)
                    marker.write_text(upload)
        return data

    def trial_run(self, trial_id: str, *, owned: bool = True) -> tuple[TrialRunDir, Callable[[], None]]:
        """(the trial's run directory on this node, a call that sends it to the experiment).
        owned: the trial writes the whole run directory (one worker); a Ray Train run's
        checkpoints are Ray's, so only the trial's own files (attempts, failure) are synced."""
        run = self.layout("node").trial_run(trial_id)
        if not self.remote:
            return run, _nothing
        remote = self.remote.child("train", trial_id)
        others = None if owned else (lambda rel: rel not in TrialRunDir.RECORDS)
        remote.pull(run.path, skip=others)  # an earlier attempt may have run on another node

        def send() -> None:
            remote.push(run.path, skip=others)
        return run, send


def _nothing() -> None:
    pass
