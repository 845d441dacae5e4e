"""Every trial's rows, cut once per sweep by Ray Data and handed to the Train workers as Arrow blocks.

A shard is a row range of the data split evenly between a trial's workers: the validation rows
[0, v), the first n train rows [v, v+n) for each training-set size, the test rows [total-n_test,
total). Worker r of W gets the r-th of W equal contiguous parts; up to W-1 rows of a range are left
out when it does not divide evenly, so that every worker runs the same number of steps.

One Ray Data read covers every range (a raw file whole; a prepared directory only the files holding
them, in parallel) and one `split_at_indices` cuts it at every boundary: one execution per sweep. A
shard is then the list of its blocks' object refs, owned by the sweep's driver. A worker takes them
with one `ray.get` (zero-copy from its node's object store), or, when they do not fit its memory,
streams them through a Ray Dataset made over them (`streamable`).

Not through Ray Train's `datasets=`: that runs a streaming execution per dataset per worker in every
trial (0.7-1.0 s for 500k rows here, against 0.3 s for fetching the blocks themselves).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from raypkg.data import FEATURES, LABEL, SplitRows, read_higgs

Range = tuple[int, int]  # rows [start, stop) of the data


def shard_ranges(rows: SplitRows, sizes: Iterable[int], workers: int) -> dict[str, Range]:
    """{"validation_<r>", "train_n<size>_<r>", "test_<r>": row range} for each worker r of `workers`."""
    splits = {"validation": (0, rows.n_validation), "test": (rows.total - rows.n_test, rows.total)}
    splits.update({f"train_n{n}": (rows.n_validation, rows.n_validation + n) for n in sizes})
    ranges = {}
    for split, (start, stop) in splits.items():
        each = (stop - start) // workers
        ranges.update({f"{split}_{r}": (start + r * each, start + (r + 1) * each) for r in range(workers)})
    return ranges


def cut_shards(data: str, ranges: dict[str, Range]) -> dict[str, list]:
    """{shard name: object refs of its Arrow blocks, in row order}, from one read of `data` (a
    HIGGS-format file `check_higgs` accepted, or a directory made by `raypkg data prepare`)."""
    if os.path.isdir(data):
        from raypkg.prepare import read_covering

        ds, position = read_covering(data, ranges.values())
    else:
        ds, position = read_higgs(data), lambda row: row
    cuts = sorted({position(row) for bounds in ranges.values() for row in bounds} - {0})
    cut = ds.split_at_indices(cuts)  # one execution
    pieces = [(at, piece.to_arrow_refs()) for at, piece in zip([0, *cuts], cut)]  # (first position, its blocks)
    shards = {}
    for name, (start, stop) in ranges.items():
        first, end = position(start), position(stop)
        shards[name] = [ref for at, refs in pieces if first <= at < end for ref in refs]
    return shards


def load(blocks: list) -> tuple:
    """Features (n, 28) and labels (n, 1), float32, of a shard's blocks (one ray.get)."""
    import ray

    return to_arrays(ray.get(list(blocks)))


def to_arrays(tables: list) -> tuple:
    """Features (n, 28) and labels (n, 1), float32, from Arrow tables of named columns."""
    import numpy as np

    n = sum(t.num_rows for t in tables)
    x, y = np.empty((n, len(FEATURES)), np.float32), np.empty((n, 1), np.float32)
    at = 0
    for table in tables:
        rows = slice(at, at + table.num_rows)
        for i, column in enumerate(FEATURES):
            x[rows, i] = table.column(column).to_numpy()
        y[rows, 0] = table.column(LABEL).to_numpy()
        at += table.num_rows
    return x, y


def streamable(shards: dict[str, list], ranges: dict[str, Range], in_memory_rows: int) -> dict:
    """`shards` with each one of more than `in_memory_rows` rows as a Ray Dataset over its blocks, for
    its worker to stream. Made here, in the sweep's driver: building one runs a task per block, which a
    Train worker could wait on forever while the trials' workers hold every CPU."""
    import ray.data

    return {name: ray.data.from_arrow_refs(blocks) if ranges[name][1] - ranges[name][0] > in_memory_rows
            else blocks for name, blocks in shards.items()}  # fmt: skip


def stream(dataset, batch_size: int, shuffle_rows: int | None):
    """(features, labels) batches of a shard too big to hold (a `streamable` Dataset), read block by
    block from the object store, shuffled within a window of `shuffle_rows` rows (None: in order)."""
    import numpy as np
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # a Train worker's log, not a terminal
    for b in dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=4,
                                  local_shuffle_buffer_size=shuffle_rows):  # fmt: skip
        yield np.column_stack([b[c] for c in FEATURES]), b[LABEL].reshape(-1, 1)
