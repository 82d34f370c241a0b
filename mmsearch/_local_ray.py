"""How a run without --address starts Ray on this machine (the search and `mmsearch train`)."""
from __future__ import annotations

import os

# its dashboard and job API run code for whoever reaches them: this machine only
DASHBOARD_HOST = "127.0.0.1"


def local_ray_address() -> str | None:
    """What a run without --address passes to ray.init: None if the user set RAY_ADDRESS (Ray
    reads it), else "local", a Ray instance of our own. Without it ray.init joins any Ray already
    running on the machine (another user's, or another search's), which then refuses our num_cpus."""
    return None if os.environ.get("RAY_ADDRESS") else "local"
