"""HIGGS-format files into Ray Datasets, checked, and cut into the tutorial's splits.

Format (UCI `HIGGS.csv.gz`): no header, one row per line, 29 comma-separated numbers; column 0 the
label (1 signal, 0 background), then 28 features. Plain or gzip.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import pyarrow as pa
from pyarrow import csv

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
SCHEMA = pa.schema([(c, pa.float32()) for c in COLUMNS])

_READ = csv.ReadOptions(column_names=list(COLUMNS), block_size=1 << 20)  # 1 MB blocks: parsed in parallel
_PARSE = csv.ParseOptions(ignore_empty_lines=False, quote_char=False)  # one line is one row, a blank one too
_CONVERT = csv.ConvertOptions(column_types=SCHEMA, null_values=[], quoted_strings_can_be_null=False)


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


def default_test_rows(total: int, n_validation: int, n_train: int | None = None) -> int:
    """UCI's 500,000 test rows when the file has room for them, else what is left (none for --n-train all)."""
    if n_train is None:  # all rows train: the test set only if the file has more than UCI's test rows
        return UCI_TEST_ROWS if total - n_validation > UCI_TEST_ROWS else 0
    return max(0, min(UCI_TEST_ROWS, total - n_validation - n_train))


def resolve_splits(splits: Splits, total: int, source: str = "the file") -> SplitRows:
    """Check the requested splits fit in `total` rows; fill in the default test size and --n-train all."""
    v, t = splits.n_validation, splits.n_train
    if v < 1 or (t is not None and t < 1):
        raise UsageError(f"--n-validation and --n-train must be at least 1 (got {v} and {t})")
    n_test = splits.n_test if splits.n_test is not None else default_test_rows(total, v, t)
    if n_test < 0:
        raise UsageError(f"--n-test must be 0 or more (got {n_test})")
    if t is None:
        t = total - v - n_test
        if t < 1:
            raise UsageError(
                f"{source} has {total:,} rows: none left to train on after --n-validation {v:,} and --n-test {n_test:,}"
            )
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


class HiggsScan:
    """One streaming pass over a HIGGS-format file: checked float32 Arrow tables, in file order.

    A background thread reads, hashes and decompresses the file into chunks of whole lines; pyarrow
    parses each chunk (multi-threaded) and checks labels and finiteness. Only a chunk pyarrow refuses is re-read line by line in Python, to
    name the bad line. Memory holds one chunk, whatever the file's size. With `skip_bad` bad rows
    are dropped and counted (`bad_rows`, first few in `bad_examples`); otherwise the first one raises.
    After the pass: `rows` kept, `lines` read, `raw_bytes` and `sha256` of the file as stored.
    """

    def __init__(self, path: str, skip_bad: bool = False, chunk_bytes: int = 16 << 20):
        self.path, self.skip_bad, self.chunk_bytes = check_path(path), skip_bad, chunk_bytes
        self.rows = self.lines = self.raw_bytes = self.bad_rows = 0
        self.bad_examples: list[str] = []
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator:
        for first_line, text in in_background(self._chunks()):  # decompressing overlaps parsing
            table = self._parse(text, first_line)
            self.rows += table.num_rows
            if table.num_rows:
                yield table
        if self.rows == 0:
            raise UsageError(f"{self.path} has no rows: {FORMAT_HINT}")

    def _chunks(self) -> Iterator[tuple[int, bytes]]:
        """(number of the first line, whole lines of text) of the decompressed file."""
        with open(self.path, "rb") as raw:
            source = _Hashing(raw, self)
            gz = is_gzip(self.path)
            stream = pa.CompressedInputStream(pa.PythonFile(source, mode="r"), "gzip") if gz else source
            carry, broken = b"", None
            while not broken:
                pieces, size = [carry], len(carry)
                try:
                    while size < self.chunk_bytes and (piece := stream.read(1 << 20)):
                        pieces.append(piece)  # 1 MB at a time: a cut gzip still gives the lines before the cut
                        size += len(piece)
                except OSError as e:  # pyarrow: "Truncated compressed stream", "zlib inflate failed: ..."
                    broken = e
                text = b"".join(pieces)
                if size == len(carry) and not broken:
                    break  # end of file
                cut = text.rfind(b"\n") + 1
                text, carry = text[:cut], text[cut:]
                if text:
                    yield self.lines + 1, text
                    self.lines += text.count(b"\n")
            if broken:
                raise UsageError(
                    f"{self.path}: the gzip stream is cut short or corrupt after line {self.lines:,} ({broken}); "
                    "fetch the file again"
                )
            if carry:
                yield self.lines + 1, carry + b"\n"
                self.lines += 1

    def _parse(self, text: bytes, first_line: int):
        import numpy as np
        import pyarrow.compute as pc

        try:
            table = csv.read_csv(pa.py_buffer(text), read_options=_READ, parse_options=_PARSE, convert_options=_CONVERT)
        except pa.ArrowInvalid:  # a row pyarrow cannot parse: find it (and any others) line by line
            return self._parse_lines(text, first_line)
        label = table.column(0)
        good = pc.or_(pc.equal(label, 0.0), pc.equal(label, 1.0))
        for column in table.columns[1:]:
            good = pc.and_(good, pc.is_finite(column))
        if pc.all(good).as_py():
            return table
        for index in np.flatnonzero(~good.to_numpy(zero_copy_only=False)):
            number = first_line + int(index)
            self._bad(number, line_problem(_line(text, int(index)), number))
        return table.filter(good)

    def _parse_lines(self, text: bytes, first_line: int):
        import numpy as np

        good = []
        for number, line in enumerate(text.decode("utf-8", errors="replace").split("\n")[:-1], start=first_line):
            problem = line_problem(line, number)
            if problem:
                self._bad(number, problem)
            else:
                good.append([float(v) for v in line.split(",")])
        values = np.array(good, dtype=np.float32).reshape(-1, len(COLUMNS))
        return pa.table({c: values[:, i] for i, c in enumerate(COLUMNS)})

    def _bad(self, number: int, problem: str) -> None:
        where = f"{self.path}, line {number:,}"
        if not self.skip_bad:
            raise UsageError(f"{where}: {problem}; {FORMAT_HINT}")
        self.bad_rows += 1
        if len(self.bad_examples) < 10:
            self.bad_examples.append(f"line {number:,}: {problem}")


def in_background(items: Iterator, depth: int = 2) -> Iterator:
    """The items of `items`, produced by a thread up to `depth` ahead; its exceptions re-raised here."""
    import queue
    import threading

    done, stop = object(), threading.Event()
    ahead: queue.Queue = queue.Queue(depth)

    def put(item) -> None:
        while not stop.is_set():
            try:
                return ahead.put(item, timeout=0.1)
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                put(item)
                if stop.is_set():
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)
        finally:
            getattr(items, "close", lambda: None)()  # a generator closes its file now, not at garbage collection

    threading.Thread(target=produce, daemon=True, name="raypkg-read").start()
    try:
        while (item := ahead.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early: let the producer end


class _Hashing:
    """A read-only file wrapper that feeds every byte read to the scan's sha256."""

    def __init__(self, raw, scan: HiggsScan):
        self.raw, self.scan = raw, scan

    def read(self, size=-1) -> bytes:
        data = self.raw.read(size)
        self.scan._hash.update(data)
        self.scan.raw_bytes += len(data)
        return data

    def readable(self) -> bool:  # what pyarrow.PythonFile asks of a file object
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def close(self) -> None:
        pass  # the `with open(...)` closes the file


def _line(text: bytes, index: int) -> str:
    start = 0
    for _ in range(index):
        start = text.index(b"\n", start) + 1
    return text[start : text.index(b"\n", start)].decode("utf-8", errors="replace")


def line_problem(line: str, number: int) -> str | None:
    """What is wrong with one line of a HIGGS-format file, or None."""
    fields = line.rstrip("\r").split(",")
    if len(fields) != len(COLUMNS):
        return f"{len(fields)} columns instead of {len(COLUMNS)}"
    for col, field in enumerate(fields):
        try:
            value = float(field.replace("_", "x"))  # Python reads 1_0 as 10, pyarrow does not
        except ValueError:
            kind = "a header row? " if number == 1 else ""
            return f"{kind}{field.strip()[:40]!r} in column {col} is not a number"
        if col == 0 and value not in (0.0, 1.0):
            return f"label {field.strip()!r} is not 0 or 1"
        if not math.isfinite(value):
            return f"{field.strip()!r} in column {col} is not a finite number"
    return None


def check_higgs(path: str) -> int:
    """Stream the whole file once; return its row count or raise a UsageError naming the first bad line."""
    scan = HiggsScan(path)
    for _table in scan:
        pass
    return scan.rows


def ordered_reads() -> None:
    """Ray Data keeps rows in file order (the splits are row ranges) and reads quietly.

    Parquet goes through Ray Data's first datasource: the DataSourceV2 pipeline that Ray 2.60 uses
    by default (ListFiles -> ReadFiles) costs 1.5-4 s per read here even for one small file, against
    0.1 s, and reads 1M rows into one block that must then be copied to be cut (bench/ingest.py).
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.use_datasource_v2 = False


def read_higgs(path: str):
    """A Ray Dataset of named float32 columns over a file `check_higgs` accepted, in file order."""
    import ray.data

    ordered_reads()
    return ray.data.read_csv(
        os.path.abspath(path),
        read_options=csv.ReadOptions(column_names=list(COLUMNS)),
        convert_options=csv.ConvertOptions(column_types=SCHEMA),
        arrow_open_stream_args={"compression": "gzip" if is_gzip(path) else None},
        file_extensions=None,  # the content decides, not the name
    )
