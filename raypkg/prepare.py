"""A HIGGS-format csv/csv.gz, prepared once into a Parquet dataset that every sweep reads fast.

    DEST/manifest.json                 rows, splits with their files and first rows, source sha256, schema
    DEST/validation/part-00000.parquet the file's first n_validation rows
    DEST/train/part-NNNNN.parquet      every row between validation and test
    DEST/test/part-NNNNN.parquet       the file's last n_test rows (UCI's 500,000 for the full file)

One streaming pass (`HiggsScan`): memory holds one text chunk and one row group, not the file.
Files hold at most `rows_per_shard` rows, so Ray Data reads many of them in parallel, and no file
spans two splits, so a split is read without touching the others. Any other row range (say the
first 10,000 train rows) is found from each file's first row in the manifest. Everything is written
under a hidden temporary directory and renamed to DEST only when complete, manifest last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from raypkg.data import COLUMNS, SCHEMA, HiggsScan, default_test_rows
from raypkg.errors import UsageError
from raypkg.fetch import UCI

MANIFEST = "manifest.json"
FORMAT = "raypkg-higgs-parquet/1"
SPLITS = ("validation", "train", "test")
PARQUET = {"use_dictionary": False, "compression": "snappy"}  # dictionaries of floats: 5x slower writes, bigger files


@dataclass(frozen=True)
class PrepareConfig:
    n_validation: int = 1_000
    n_test: int | None = None  # None: UCI's 500,000 when the file has more rows than that after validation, else 0
    rows_per_shard: int = 250_000  # ~29 MB of float32 per file: 42 files for the full 11M rows
    row_group_rows: int = 50_000
    skip_bad_rows: bool = False  # False: the first bad row stops the pass


def prepare(src: str, dest: str, cfg: PrepareConfig = PrepareConfig(), log=print) -> dict:
    """Turn `src` into a prepared directory `dest`; return its manifest."""
    check_settings(cfg)
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise UsageError(f"{dest} already exists: give a new destination (prepare never overwrites)")
    parent = os.path.dirname(dest)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UsageError(f"cannot write in {parent}: it is a file, not a directory; give another destination")
    try:
        os.makedirs(parent, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.incomplete-", dir=parent)
    except OSError as e:
        raise UsageError(f"cannot write in {parent} ({e.strerror}): give a writable destination") from None
    started = time.time()
    try:
        scan = HiggsScan(src, skip_bad=cfg.skip_bad_rows)
        with ShardWriter(work, first_cut=cfg.n_validation, rows_per_shard=cfg.rows_per_shard,
                         row_group_rows=cfg.row_group_rows) as writer:  # fmt: skip
            for table in scan:
                writer.write(table)
        n_test = cfg.n_test if cfg.n_test is not None else default_test_rows(scan.rows, cfg.n_validation)
        if cfg.n_validation + n_test > scan.rows:
            raise UsageError(
                f"{src} has {scan.rows:,} rows, fewer than --n-validation {cfg.n_validation:,} + --n-test "
                f"{n_test:,}: lower them"
            )
        files = writer.cut_at(scan.rows - n_test)
        manifest = {
            "format": FORMAT,
            "rows": scan.rows,
            "splits": place_in_splits(work, files, cfg.n_validation, scan.rows - n_test),
            "source": {"path": scan.path, "bytes": scan.raw_bytes, "sha256": scan.sha256,
                       "is_uci_higgs": scan.sha256 == UCI.sha256, "lines": scan.lines,
                       "bad_rows_skipped": scan.bad_rows, "bad_row_examples": scan.bad_examples},  # fmt: skip
            "schema": {c: "float32" for c in COLUMNS},
            "settings": asdict(cfg),
            "prepare_s": round(time.time() - started, 3),
        }
        with open(os.path.join(work, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if scan.bad_rows:
        log(f"prepare: skipped {scan.bad_rows:,} bad rows, first: {scan.bad_examples[0]}")
    sizes = ", ".join(f"{s} {manifest['splits'][s]['rows']:,}" for s in SPLITS)
    log(f"prepare: {dest}: {scan.rows:,} rows ({sizes}) in {manifest['prepare_s']:.1f} s")
    return manifest


def check_settings(cfg: PrepareConfig) -> None:
    for flag, value, least in [("--n-validation", cfg.n_validation, 0), ("--n-test", cfg.n_test or 0, 0),
                               ("--rows-per-shard", cfg.rows_per_shard, 1)]:  # fmt: skip
        if value < least:
            raise UsageError(f"{flag} must be at least {least} (got {value:,})")


class ShardWriter:
    """Rows in file order into part-NNNNN.parquet files of at most `rows_per_shard` rows.

    The first file ends after `first_cut` rows (the validation split); the test boundary, known
    only at the end of a gzip stream, is cut afterwards by `cut_at`.
    """

    def __init__(self, root: str, first_cut: int, rows_per_shard: int, row_group_rows: int):
        self.root, self.rows_per_shard, self.row_group_rows = root, rows_per_shard, row_group_rows
        self.files: list[dict] = []  # {"path", "start", "rows"} in row order
        self._limit = first_cut or rows_per_shard
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close_file()

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                self._open_file()
            room = self._limit - self.files[-1]["rows"]
            head, table = table.slice(0, room), table.slice(room)
            self._pending.append(head)
            self._pending_rows += head.num_rows
            self.files[-1]["rows"] += head.num_rows
            if self._pending_rows >= self.row_group_rows:
                self._flush()
            if self.files[-1]["rows"] == self._limit:
                self._close_file()
                self._limit = self.rows_per_shard

    def _open_file(self) -> None:
        start = self.files[-1]["start"] + self.files[-1]["rows"] if self.files else 0
        path = os.path.join(self.root, f"part-{len(self.files):05d}.parquet")
        self.files.append({"path": path, "start": start, "rows": 0})
        self._writer = pq.ParquetWriter(path, SCHEMA, **PARQUET)

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=self.row_group_rows)
            self._pending, self._pending_rows = [], 0

    def _close_file(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def cut_at(self, row: int) -> list[dict]:
        """Split the file that holds `row` so that a file starts there; return all files."""
        for i, f in enumerate(self.files):
            if f["start"] < row < f["start"] + f["rows"]:
                table = pq.read_table(f["path"])
                keep = row - f["start"]
                tail = {"path": f["path"].replace(".parquet", "-tail.parquet"), "start": row, "rows": f["rows"] - keep}
                pq.write_table(table.slice(keep), tail["path"], row_group_size=self.row_group_rows, **PARQUET)
                pq.write_table(table.slice(0, keep), f["path"], row_group_size=self.row_group_rows, **PARQUET)
                f["rows"] = keep
                self.files.insert(i + 1, tail)
                break
        return self.files


def place_in_splits(root: str, files: list[dict], train_start: int, test_start: int) -> dict:
    """Move each file into its split's directory; return {split: {"start", "rows", "files"}}."""
    bounds = {"validation": (0, train_start), "train": (train_start, test_start), "test": (test_start, None)}
    splits = {}
    for split, (lo, hi) in bounds.items():
        os.makedirs(os.path.join(root, split))
        mine = [f for f in files if f["start"] >= lo and (hi is None or f["start"] < hi) and f["rows"]]
        listed = []
        for n, f in enumerate(mine):
            name = os.path.join(split, f"part-{n:05d}.parquet")
            os.rename(f["path"], os.path.join(root, name))
            listed.append({"path": name, "start": f["start"], "rows": f["rows"]})
        end = hi if hi is not None else (files[-1]["start"] + files[-1]["rows"])
        splits[split] = {"start": lo, "rows": end - lo, "files": listed}
    return splits


def read_manifest(path: str) -> dict:
    """The manifest of a prepared directory, or a UsageError saying what the directory is missing."""
    file = os.path.join(path, MANIFEST)
    try:
        with open(file) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise UsageError(
            f"{path} is a directory without {MANIFEST}: give a HIGGS-format file or a directory made by "
            "`raypkg data prepare`"
        ) from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{file} is unreadable ({e}): prepare the data again") from None
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{file} is not a {FORMAT} manifest: prepare the data again with this raypkg")
    return manifest


def read_covering(path: str, ranges) -> tuple:
    """A Ray Dataset of the prepared files that hold any row of `ranges` ((start, stop) row pairs), read
    in parallel and in row order, and the position in it of a row at or between those files' bounds."""
    import ray.data

    from raypkg.data import ordered_reads

    ordered_reads()
    manifest = read_manifest(path)
    files = [f for s in SPLITS for f in manifest["splits"][s]["files"]
             if any(f["start"] < stop and f["start"] + f["rows"] > start for start, stop in ranges)]  # fmt: skip
    offsets = [sum(f["rows"] for f in files[:i]) for i in range(len(files))]  # each file's first position

    def position(row: int) -> int:
        for f, offset in zip(files, offsets):
            if f["start"] <= row <= f["start"] + f["rows"]:
                return offset + row - f["start"]
        return 0  # an empty range's bound outside every file: only ever compared with itself

    return ray.data.read_parquet([os.path.join(path, f["path"]) for f in files], schema=SCHEMA), position
