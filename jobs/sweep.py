"""Job entrypoint: the same sweep as `raypkg sweep`, for `ray job submit`.

    ray job submit --working-dir . -- python jobs/sweep.py --arms tiny,large --max-epochs 100

Arguments are `raypkg sweep`'s. Inside a job RAY_ADDRESS is set, so the sweep joins the cluster.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir's raypkg/

from raypkg.cli import app  # noqa: E402

if __name__ == "__main__":
    app(["sweep", *sys.argv[1:]])
