"""Job entrypoint: a sweep and its report, for `ray job submit` (cluster/README.md has the full recipe).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/sweep.py --study jobs/studies/full_scale.toml --data /mnt/shared/higgs --name full-1

Arguments are `raypkg sweep`'s; the report goes to RUN_DIR/report. Results land in --storage, or
$RAYPKG_STORAGE when it is not given (on a cluster a path every node mounts). Inside a job
RAY_ADDRESS is set, so the sweep joins the cluster the job was submitted to.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the job's working dir

import raypkg  # noqa: E402
from raypkg.cli import app  # noqa: E402

if __name__ == "__main__":
    if not os.environ.get("RAYPKG_STORAGE") and not any(a.split("=")[0] == "--storage" for a in sys.argv):
        sys.exit("error: give --storage or set RAYPKG_STORAGE to a path every node mounts: "
                 "a job's working directory is a temporary copy that is deleted with the job")  # fmt: skip
    print(f"raypkg {raypkg.__version__} from {os.path.dirname(raypkg.__file__)}", file=sys.stderr)
    app(["sweep", "--report", *sys.argv[1:]])
