"""Rows per second of `raypkg data prepare` beside the readers a user would otherwise pick, in one run.

    .venv/bin/python bench/ingest.py [--rows 1e6] [--file PATH]

On one HIGGS-format .csv.gz (synthesized unless --file is given), each reader goes through every row:
- tutorial:  the TensorFlow tutorial's pipeline, tf.data.experimental.CsvDataset(compression_type="GZIP")
             -> batch(10000).map(pack_row).unbatch() -> batch(500), iterated to the end;
- pyarrow:   pyarrow.csv.read_csv of the whole file into one table (the fastest raw parse, no checks);
- prepare:   raypkg's one pass: parse, check every row, hash the source, write Parquet shards + manifest;
- parquet:   reading the prepared train and test splits back with pyarrow;
- sweep:     raypkg's data path on the prepared directory, as a sweep runs it: one Ray Data read cut
             into validation/train/test shards (raypkg/shards.py), each fetched into arrays and one
             epoch of the worker's shuffled tf.data batches of 500 (train.batches), iterated to the end
             (Ray's start-up excluded; Ray Data's first use in the session included: its worker
             processes and actors start here);
- sweep-2nd: the same again in the same session (what every later read of a sweep costs);
- sweep-raw: the same path straight from the .csv.gz (a sweep without `data prepare`: the check pass
             over the file, then Ray Data's parse).
Ratios are against the tutorial pipeline and against pyarrow, measured in this same run.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from raypkg.data import COLUMNS, SCHEMA  # noqa: E402


def tutorial(path: str) -> int:
    import tensorflow as tf

    def pack_row(*row):
        return tf.stack(row[1:], 1), row[0]

    ds = tf.data.experimental.CsvDataset(path, [float()] * len(COLUMNS), compression_type="GZIP")
    rows = 0
    for _x, y in ds.batch(10_000).map(pack_row).unbatch().batch(500):
        rows += int(y.shape[0])
    return rows


def pyarrow_read(path: str) -> int:
    from pyarrow import csv

    table = csv.read_csv(path, read_options=csv.ReadOptions(column_names=list(COLUMNS)),
                         convert_options=csv.ConvertOptions(column_types=SCHEMA))  # fmt: skip
    return table.num_rows


def prepare_once(path: str, dest: str) -> int:
    from raypkg.prepare import prepare

    return prepare(path, dest, log=lambda *a: None)["rows"]


def parquet_read(dest: str) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(dest, "train")).num_rows + pq.read_table(os.path.join(dest, "test")).num_rows


def sweep_path(data: str) -> int:
    """Every row through the sweep's data path: check, one read cut into validation/train/test shards,
    a worker's fetch of its blocks into arrays, an epoch of its tf.data batches of 500."""
    import tensorflow as tf

    from raypkg.config import Splits
    from raypkg.data import check_higgs, resolve_splits
    from raypkg.prepare import read_manifest
    from raypkg.shards import cut_shards, load, shard_ranges
    from raypkg.train import batches, steps

    total = read_manifest(data)["rows"] if os.path.isdir(data) else check_higgs(data)
    rows = resolve_splits(Splits(n_validation=1_000, n_train=None, n_test=None), total, source=data)
    seen = 0
    for blocks in cut_shards(data, shard_ranges(rows, [rows.n_train], workers=1)).values():
        x, y = load(blocks)  # as train.feed does, here in the driver instead of a Train worker
        epoch = batches(x, y, 500, shuffle_seed=0).take(steps(len(x), 500))  # the worker's shuffled epoch
        seen += int(epoch.reduce(0, lambda n, batch: n + tf.shape(batch[1])[0]))  # consumed in TF, as fit does
    return seen


def start_ray() -> None:
    import logging

    import ray

    logging.getLogger("ray").setLevel(logging.WARNING)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False


def timed(fn, *args) -> tuple[int, float]:
    start = time.perf_counter()
    rows = fn(*args)
    return rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=float, default=1e6)
    parser.add_argument("--file", help="an existing HIGGS-format .csv.gz [default: synthesize --rows rows]")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "ingest.json"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="raypkg-bench-ingest-")
    try:
        path = args.file
        if not path:
            from raypkg.synth import write_synth

            path = write_synth(os.path.join(work, "higgs.csv.gz"), int(args.rows), seed=0, log=lambda *a: None)
        dest = os.path.join(work, "prepared")
        results = {
            "pyarrow": timed(pyarrow_read, path),
            "prepare": timed(prepare_once, path, dest),
            "parquet": timed(parquet_read, dest),
            "tutorial": timed(tutorial, path),
        }
        start_ray()
        results["sweep"] = timed(sweep_path, dest)
        results["sweep-2nd"] = timed(sweep_path, dest)
        results["sweep-raw"] = timed(sweep_path, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = {name: r for name, (r, _) in results.items()}
    every_row = ("pyarrow", "prepare", "tutorial", "sweep", "sweep-2nd", "sweep-raw")
    assert len({rows[k] for k in every_row}) == 1, rows
    rate = {name: r / s for name, (r, s) in results.items()}
    table = [
        {"reader": name, "rows": r, "seconds": round(s, 2), "rows_per_s": round(rate[name]),
         "vs_tutorial": round(rate[name] / rate["tutorial"], 2), "vs_pyarrow": round(rate[name] / rate["pyarrow"], 2)}
        for name, (r, s) in results.items()
    ]  # fmt: skip
    print(f"{'reader':<11}{'rows':>12}{'s':>8}{'rows/s':>12}{'x tutorial':>12}{'x pyarrow':>11}")
    for row in table:
        print(f"{row['reader']:<11}{row['rows']:>12,}{row['seconds']:>8.2f}{row['rows_per_s']:>12,}"
              f"{row['vs_tutorial']:>12.2f}{row['vs_pyarrow']:>11.2f}")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"file": args.file or f"synth {int(args.rows):,} rows (gzip)", "cpus": os.cpu_count(),
                   "results": table}, f, indent=1)  # fmt: skip
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
