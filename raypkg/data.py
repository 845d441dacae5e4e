"""HIGGS-format files into Ray Datasets, checked, and cut into the tutorial's splits.

Format (UCI `HIGGS.csv.gz`): no header, one row per line, 29 comma-separated numbers; column 0 the
label (1 signal, 0 background), then 28 features. Plain or gzip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

from raypkg.config import UCI_TEST_ROWS, Splits
from raypkg.errors import UsageError

LABEL = "label"
FEATURES = (
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet_1_pt", "jet_1_eta", "jet_1_phi", "jet_1_btag",
    "jet_2_pt", "jet_2_eta", "jet_2_phi", "jet_2_btag",
    "jet_3_pt", "jet_3_eta", "jet_3_phi", "jet_3_btag",
    "jet_4_pt", "jet_4_eta", "jet_4_phi", "jet_4_btag",
    "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb",
)  # fmt: skip
COLUMNS = (LABEL, *FEATURES)
FORMAT_HINT = "expected no header and 29 comma-separated numbers per row (label 0/1, then 28 features)"


def sample_path() -> str:
    """The 10,984 real HIGGS rows shipped with the package (see raypkg/data/README.md)."""
    return str(resources.files("raypkg") / "data" / "HIGGS_sample_10984.csv.gz")


@dataclass(frozen=True)
class SplitRows:
    """Resolved row counts; validation = rows [0, v), train = [v, v+t), test = [total-n_test, total)."""

    total: int
    n_validation: int
    n_train: int
    n_test: int

    def boundaries(self) -> list[int]:
        v, t = self.n_validation, self.n_train
        return [v, v + t, self.total - self.n_test]


def resolve_splits(splits: Splits, total: int, source: str = "the file") -> SplitRows:
    """Check the requested splits fit in `total` rows and fill in the default test size."""
    v, t = splits.n_validation, splits.n_train
    if v < 1 or t < 1:
        raise UsageError(f"--n-validation and --n-train must be at least 1 (got {v} and {t})")
    free = total - v - t
    n_test = splits.n_test if splits.n_test is not None else max(0, min(UCI_TEST_ROWS, free))
    if n_test < 0:
        raise UsageError(f"--n-test must be 0 or more (got {n_test})")
    if v + t + n_test > total:
        raise UsageError(
            f"{source} has {total:,} rows but --n-validation {v:,} + --n-train {t:,} + --n-test "
            f"{n_test:,} = {v + t + n_test:,}: lower them so they fit"
        )
    return SplitRows(total, v, t, n_test)


def check_path(path: str) -> str:
    """Absolute path of an existing, readable data file."""
    if not os.path.exists(path):
        raise UsageError(f"data file not found: {path} (give a HIGGS-format .csv or .csv.gz)")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory: give a HIGGS-format .csv or .csv.gz file")
    if os.path.getsize(path) == 0:
        raise UsageError(f"{path} is empty: {FORMAT_HINT}")
    return os.path.abspath(path)


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_csv(path: str, block_size: int = 1 << 22):
    import pyarrow as pa
    from pyarrow import csv

    stream = pa.input_stream(path, compression="gzip" if is_gzip(path) else None)
    return csv.open_csv(
        stream,
        read_options=csv.ReadOptions(column_names=list(COLUMNS), block_size=block_size),
        parse_options=csv.ParseOptions(ignore_empty_lines=False),  # a blank line is a bad row, and counts
        convert_options=csv.ConvertOptions(column_types={c: pa.float32() for c in COLUMNS}),
    )


def check_higgs(path: str) -> int:
    """Stream the whole file once; return its row count or raise a UsageError naming the first bad line."""
    import numpy as np
    import pyarrow as pa

    path = check_path(path)
    rows = 0
    try:
        for batch in _open_csv(path):
            label = batch.column(0).to_numpy(zero_copy_only=False)
            feats = np.column_stack([c.to_numpy(zero_copy_only=False) for c in batch.columns[1:]])
            bad = ~np.isin(label, (0.0, 1.0)) | ~np.isfinite(feats).all(axis=1)
            if bad.any():
                rows += int(np.argmax(bad))
                break
            rows += batch.num_rows
        else:
            if rows == 0:
                raise UsageError(f"{path} has no rows: {FORMAT_HINT}")
            return rows
    except (pa.ArrowInvalid, OSError, EOFError):
        pass  # pyarrow does not say which line: find it below
    line, problem = _find_bad_line(path, first_line=rows + 1)
    where = f"{path}, line {line:,}" if line else path
    raise UsageError(f"{where}: {problem}; {FORMAT_HINT}")


def _find_bad_line(path: str, first_line: int) -> tuple[int | None, str]:
    """(line number, problem) of the first bad line at or after `first_line`, read as plain text."""
    import gzip
    import math
    import zlib

    opener = gzip.open if is_gzip(path) else open
    number = 0
    try:
        with opener(path, "rt", newline="") as f:
            for number, text in enumerate(f, start=1):
                if number < first_line:
                    continue
                fields = text.rstrip("\r\n").split(",")
                if len(fields) != len(COLUMNS):
                    return number, f"{len(fields)} columns instead of {len(COLUMNS)}"
                for col, field in enumerate(fields):
                    try:
                        value = float(field.replace("_", "x"))  # Python reads 1_0 as 10, pyarrow does not
                    except ValueError:
                        kind = "a header row? " if number == 1 else ""
                        return number, f"{kind}{field.strip()[:40]!r} in column {col} is not a number"
                    if col == 0 and value not in (0.0, 1.0):
                        return number, f"label {field.strip()!r} is not 0 or 1"
                    if not math.isfinite(value):
                        return number, f"{field.strip()!r} in column {col} is not a finite number"
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        return None, f"the gzip stream is cut short or corrupt after line {number:,} ({e}); fetch the file again"
    except UnicodeDecodeError:
        return number + 1, "binary data, not text"
    return None, "the file has no rows" if number == 0 else "unreadable as CSV"


def read_higgs(path: str):
    """A Ray Dataset of named float32 columns over a file `check_higgs` accepted, in file order."""
    import pyarrow as pa
    import ray.data
    from pyarrow import csv

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the splits are row ranges of the file
    ctx.enable_progress_bars = False
    return ray.data.read_csv(
        os.path.abspath(path),
        read_options=csv.ReadOptions(column_names=list(COLUMNS)),
        convert_options=csv.ConvertOptions(column_types={c: pa.float32() for c in COLUMNS}),
        arrow_open_stream_args={"compression": "gzip" if is_gzip(path) else None},
        file_extensions=None,  # the content decides, not the name
    )


def split_higgs(ds, rows: SplitRows):
    """(validation, train, test) Ray Datasets cut from `ds` by row position (materializes `ds` once)."""
    val, train, _unused, test = ds.split_at_indices(rows.boundaries())
    return val, train, test


def to_arrays(batches) -> tuple:
    """Features (n, 28) and labels (n, 1), float32, from an iterable of column-dict numpy batches."""
    import numpy as np

    parts = list(batches)
    if not parts:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros((0, 1), np.float32)
    x = np.concatenate([np.column_stack([b[c] for c in FEATURES]) for b in parts]).astype(np.float32)
    y = np.concatenate([b[LABEL] for b in parts]).astype(np.float32).reshape(-1, 1)
    return x, y
