"""What a Tune trial's process does around its training: it records each attempt (the node and
process it runs in) and why an attempt failed in the trial's run directory (so the pool leaves the trial out and `status` can say why), and it enforces
--trial-timeout-s.

A trial that runs past its limit is hung (a stalled file system, a deadlock in native code) or too
slow for the user's budget: no exception can reach a thread stuck in native code, so a watchdog
thread records the timeout and ends the process (os._exit). Tune sees the trial's process die and
may restart it (--max-failures); the restart finds the timeout record and fails at once, rather
than hanging again, so the trial ends as ERROR with that cause. Tune stopping a trial (ASHA, the
time budget) ends its thread with SystemExit, which is not a failure and is not recorded."""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import MMSearchError
from ..layout.checkpoint_dir import TrialRunDir

TIMED_OUT_EXIT_CODE = 124  # as timeout(1)
_NOTHING = lambda: None  # noqa: E731


class TrialTimedOut(MMSearchError):
    """The trial ran past --trial-timeout-s before (a restart does not train it again)."""


@contextmanager
def guarded(run: TrialRunDir, timeout_s: float, *, node_id: str = "", send: Callable[[], None] = _NOTHING) -> Iterator[None]:
    """node_id: the Ray node this attempt runs on, recorded with the process (where it ran).
    send: sends the run directory to the experiment's storage after each record (a no-op unless
    the experiment is on object storage: mmsearch.layout.location)."""
    run.record_attempt({"node_id": node_id, "pid": os.getpid(), "started": time.time()})
    previous = run.failure()
    if previous is not None and previous["kind"] == "timeout":
        send()
        raise TrialTimedOut(previous["cause"])
    run.clear_failure()  # a retry of an attempt that raised: it may yet succeed
    send()
    watchdog = None
    if timeout_s > 0:
        watchdog = threading.Timer(timeout_s, _time_out, args=(run, timeout_s, send))
        watchdog.daemon = True
        watchdog.start()
    try:
        yield
    except Exception as e:
        run.record_failure("error", f"{type(e).__name__}: {e}"[:500])
        send()
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()


def _time_out(run: TrialRunDir, timeout_s: float, send: Callable[[], None]) -> None:
    cause = f"ran past --trial-timeout-s {timeout_s:g} s (hung, or too slow for the limit); not retried"
    run.record_failure("timeout", cause)
    try:
        send()
    except Exception as e:  # the process ends anyway: the record stays on this node
        print(f"[mmsearch] trial {run.path.name}: could not send its timeout record ({e})", file=sys.stderr, flush=True)
    print(f"[mmsearch] trial {run.path.name} {cause}: ending its process", file=sys.stderr, flush=True)
    os._exit(TIMED_OUT_EXIT_CODE)
