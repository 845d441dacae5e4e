"""Peak memory of `raypkg data prepare` at 1M and 10M rows: it must stay flat in the number of rows.

    .venv/bin/python bench/prepare_memory.py [--rows 1e6,1e7] [--work DIR]

Each size is synthesized as plain CSV (the 10M-row file is ~2.7 GB: --work must have room), then
prepared by `raypkg data prepare` in its own process; the process's peak resident set (ru_maxrss from
wait4) is reported, with its ratio to the smallest size's. Target (issue 3): 10M within 1.2x of 1M.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one command run to completion."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # ru_maxrss is in KB on Linux


def main() -> None:
    from raypkg.synth import write_synth

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1e6,1e7")
    parser.add_argument("--work", default=None, help="scratch directory [default: a new temp dir]")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "prepare_memory.json"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="raypkg-bench-mem-", dir=args.work)
    raypkg = [sys.executable, "-m", "raypkg.cli", "data", "prepare"]
    table = []
    try:
        for rows in [int(float(r)) for r in args.rows.split(",")]:
            src = write_synth(os.path.join(work, f"{rows}.csv"), rows, log=lambda *a: None)
            mb, seconds = peak_rss_mb([*raypkg, src, os.path.join(work, f"{rows}.prepared")])
            table.append({"rows": rows, "source_mb": round(os.path.getsize(src) / 1e6), "peak_rss_mb": round(mb, 1),
                          "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds)})  # fmt: skip
            os.remove(src)
            shutil.rmtree(os.path.join(work, f"{rows}.prepared"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = table[0]["peak_rss_mb"]
    print(f"{'rows':>12}{'csv MB':>9}{'peak RSS MB':>13}{'x smallest':>12}{'s':>8}{'rows/s':>12}")
    for row in table:
        row["vs_smallest"] = round(row["peak_rss_mb"] / base, 3)
        print(f"{row['rows']:>12,}{row['source_mb']:>9,}{row['peak_rss_mb']:>13.1f}{row['vs_smallest']:>12.3f}"
              f"{row['seconds']:>8.1f}{row['rows_per_s']:>12,}")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"cpus": os.cpu_count(), "results": table}, f, indent=1)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
