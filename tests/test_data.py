"""Getting HIGGS: fetch (against a real HTTP server on 127.0.0.1), prepare, synth. No Ray."""

import gzip
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyarrow import csv

from raypkg.data import COLUMNS, SCHEMA, check_higgs, sample_path
from raypkg.errors import UsageError
from raypkg.fetch import Expected, fetch
from raypkg.prepare import MANIFEST, PrepareConfig, prepare
from raypkg.synth import write_synth

SAMPLE_BYTES = Path(sample_path()).read_bytes()
SAMPLE = Expected(size=len(SAMPLE_BYTES), sha256=hashlib.sha256(SAMPLE_BYTES).hexdigest())


# --- fetch ------------------------------------------------------------------------------------


class Server(http.server.ThreadingHTTPServer):
    """Serves SAMPLE_BYTES at /HIGGS.csv.gz with HTTP Range; can cut a response short or stall."""

    cut_after: int | None = None  # bytes sent before the connection is dropped
    stall_s: float = 0.0
    ranges: list[str]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server: Server = self.server
        if self.path != "/HIGGS.csv.gz":
            self.send_error(404)
            return
        body = SAMPLE_BYTES
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if server.stall_s:
            time.sleep(server.stall_s)
        payload = body[start:]
        if server.cut_after is not None:
            payload = payload[: server.cut_after]
        self.wfile.write(payload)
        self.wfile.flush()
        if server.cut_after is not None:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = Server(("127.0.0.1", 0), Handler)
    srv.ranges = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/HIGGS.csv.gz"


def test_fetch_downloads_and_verifies(server, tmp_path):
    path = fetch(url_of(server), str(tmp_path), SAMPLE, progress=False, log=lambda *a: None)
    assert Path(path).read_bytes() == SAMPLE_BYTES
    assert sorted(os.listdir(tmp_path)) == ["HIGGS.csv.gz"]


def test_fetch_resumes_a_cut_download(server, tmp_path):
    server.cut_after = 600_000
    with pytest.raises(UsageError, match=r"stopped .* after 600,000 bytes; .*HIGGS.csv.gz.part is kept"):
        fetch(url_of(server), str(tmp_path), SAMPLE, progress=False)
    assert os.listdir(tmp_path) == ["HIGGS.csv.gz.part"]  # nothing under the final name
    server.cut_after = None
    path = fetch(url_of(server), str(tmp_path), SAMPLE, progress=False, log=lambda *a: None)
    assert server.ranges == [None, "bytes=600000-"]  # the second request asked only for the rest
    assert Path(path).read_bytes() == SAMPLE_BYTES
    assert os.listdir(tmp_path) == ["HIGGS.csv.gz"]


def test_fetch_checksum_mismatch_leaves_nothing(server, tmp_path):
    wrong = Expected(size=SAMPLE.size, sha256="0" * 64)
    with pytest.raises(UsageError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}: the download was removed"):
        fetch(url_of(server), str(tmp_path), wrong, progress=False)
    assert os.listdir(tmp_path) == []


def test_fetch_size_mismatch_stops_before_downloading(server, tmp_path):
    with pytest.raises(UsageError, match=rf"is {SAMPLE.size:,} bytes, expected 2,816,407,858: check --url"):
        fetch(url_of(server), str(tmp_path), Expected(), progress=False)
    assert not (tmp_path / "HIGGS.csv.gz").exists()


def test_fetch_existing_file_is_verified_not_downloaded(server, tmp_path):
    (tmp_path / "HIGGS.csv.gz").write_bytes(SAMPLE_BYTES)
    fetch(url_of(server), str(tmp_path), SAMPLE, progress=False, log=lambda *a: None)
    assert server.ranges == []
    (tmp_path / "HIGGS.csv.gz").write_bytes(SAMPLE_BYTES[:-1] + b"x")
    with pytest.raises(UsageError, match="has sha256 .* remove .*HIGGS.csv.gz and run again"):
        fetch(url_of(server), str(tmp_path), SAMPLE, progress=False)


def test_fetch_refused_connection(tmp_path):
    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens there now
    with pytest.raises(UsageError, match=r"cannot download http://127.0.0.1:\d+/HIGGS.csv.gz \(.*refused"):
        fetch(f"http://127.0.0.1:{port}/HIGGS.csv.gz", str(tmp_path), SAMPLE, progress=False)


def test_fetch_stalled_server_times_out_and_keeps_nothing_final(server, tmp_path):
    server.stall_s = 3
    with pytest.raises(UsageError, match=r"stopped \(.*timed out.*\) after 0 bytes"):
        fetch(url_of(server), str(tmp_path), SAMPLE, timeout=0.5, progress=False)
    assert not (tmp_path / "HIGGS.csv.gz").exists()


def test_fetch_http_error(server, tmp_path):
    with pytest.raises(UsageError, match=r"/missing.csv.gz: HTTP 404 Not Found: check --url"):
        fetch(url_of(server).replace("HIGGS", "missing"), str(tmp_path), SAMPLE, progress=False)
    assert os.listdir(tmp_path) == []


def test_fetch_from_a_local_path_through_pyarrow(tmp_path):
    path = fetch(sample_path(), str(tmp_path / "dest"), SAMPLE, progress=False, log=lambda *a: None)
    assert Path(path).read_bytes() == SAMPLE_BYTES


def test_fetch_unwritable_dest(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"cannot create .*file/dest \(Not a directory\): give a writable --dest"):
        fetch(sample_path(), str(tmp_path / "file" / "dest"), SAMPLE, progress=False)


# --- prepare ----------------------------------------------------------------------------------


def raw_rows(path: str) -> np.ndarray:
    """The whole file as a (rows, 29) float32 array, read by pyarrow directly."""
    table = csv.read_csv(path, read_options=csv.ReadOptions(column_names=list(COLUMNS)),
                         convert_options=csv.ConvertOptions(column_types=SCHEMA))  # fmt: skip
    return np.column_stack([c.to_numpy() for c in table.columns])


def split_rows(dest: Path, split: str) -> np.ndarray:
    manifest = json.loads((dest / MANIFEST).read_text())
    files = [dest / f["path"] for f in manifest["splits"][split]["files"]]
    if not files:
        return np.zeros((0, len(COLUMNS)), np.float32)
    return np.concatenate([np.column_stack([c.to_numpy() for c in pq.read_table(f).columns]) for f in files])


QUIET = {"log": lambda *a: None}


@pytest.mark.parametrize("n_test", [984, 2_000])  # on a file boundary, and inside a file
def test_prepare_splits_are_the_files_row_ranges(tmp_path, n_test):
    dest = tmp_path / "prepared"
    manifest = prepare(sample_path(), str(dest), PrepareConfig(n_test=n_test, rows_per_shard=3_000), **QUIET)
    raw = raw_rows(sample_path())
    assert manifest["rows"] == len(raw) == 10_984
    train_end = len(raw) - n_test
    assert np.array_equal(split_rows(dest, "validation"), raw[:1_000])
    assert np.array_equal(split_rows(dest, "train"), raw[1_000:train_end])
    assert np.array_equal(split_rows(dest, "test"), raw[train_end:])
    splits = manifest["splits"]
    assert [(splits[s]["start"], splits[s]["rows"]) for s in ("validation", "train", "test")] == [
        (0, 1_000), (1_000, train_end - 1_000), (train_end, n_test)]  # fmt: skip
    for split in splits.values():
        assert all(f["rows"] <= 3_000 for f in split["files"])
        assert sum(f["rows"] for f in split["files"]) == split["rows"]
    assert manifest["source"]["sha256"] == SAMPLE.sha256
    assert manifest["source"]["bytes"] == SAMPLE.size
    assert manifest["schema"] == {c: "float32" for c in COLUMNS}
    assert sorted(os.listdir(tmp_path)) == ["prepared"]  # no temporary directory left


def test_prepare_default_test_split_is_empty_for_a_small_file(tmp_path):
    manifest = prepare(sample_path(), str(tmp_path / "p"), **QUIET)
    assert (manifest["splits"]["train"]["rows"], manifest["splits"]["test"]["rows"]) == (9_984, 0)


def test_prepare_refuses_an_existing_destination(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(UsageError, match="p already exists: give a new destination"):
        prepare(sample_path(), str(tmp_path / "p"), **QUIET)


def test_prepare_unwritable_destination(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"cannot write in .*file: it is a file, not a directory"):
        prepare(sample_path(), str(tmp_path / "file" / "p"), **QUIET)


def corrupt_copy(tmp_path: Path, line: int, text: str) -> str:
    """The sample as plain text, with 1-based `line` replaced by `text`."""
    lines = gzip.decompress(SAMPLE_BYTES).decode().splitlines(keepends=True)
    lines[line - 1] = text
    path = tmp_path / "bad.csv"
    path.write_text("".join(lines))
    return str(path)


def test_prepare_stops_at_a_bad_row_and_leaves_nothing(tmp_path):
    src = corrupt_copy(tmp_path, 5_000, "1,2,3\n")
    with pytest.raises(UsageError, match=r"bad.csv, line 5,000: 3 columns instead of 29"):
        prepare(src, str(tmp_path / "p"), **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["bad.csv"]


def test_prepare_can_skip_and_count_bad_rows(tmp_path):
    line = gzip.decompress(SAMPLE_BYTES).decode().splitlines()[4_999]
    src = corrupt_copy(tmp_path, 5_000, "2," + line.split(",", 1)[1] + "\n")
    manifest = prepare(src, str(tmp_path / "p"), PrepareConfig(skip_bad_rows=True), **QUIET)
    assert manifest["rows"] == 10_983
    assert manifest["source"]["bad_rows_skipped"] == 1
    assert manifest["source"]["bad_row_examples"] == ["line 5,000: label '2' is not 0 or 1"]
    raw = raw_rows(src)
    kept = np.concatenate([split_rows(tmp_path / "p", s) for s in ("validation", "train", "test")])
    assert np.array_equal(kept, np.delete(raw, 4_999, axis=0))


def test_prepare_truncated_gzip_leaves_nothing(tmp_path):
    src = tmp_path / "cut.csv.gz"
    src.write_bytes(SAMPLE_BYTES[: len(SAMPLE_BYTES) // 2])
    with pytest.raises(UsageError, match="gzip stream is cut short or corrupt after line"):
        prepare(str(src), str(tmp_path / "p"), **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["cut.csv.gz"]


def test_prepare_too_few_rows_for_the_splits(tmp_path):
    with pytest.raises(UsageError, match="has 10,984 rows, fewer than --n-validation 1,000 \\+ --n-test 20,000"):
        prepare(sample_path(), str(tmp_path / "p"), PrepareConfig(n_test=20_000), **QUIET)
    assert os.listdir(tmp_path) == []


def test_scan_counts_lines_across_chunks(tmp_path):
    """Small chunks (1 MB of a 6.5 MB file): lines cut between reads, bad rows found by pyarrow's checks
    (label, NaN) and by the line-by-line fallback (text, column count) all keep their exact line numbers."""
    from raypkg.data import HiggsScan

    lines = gzip.decompress(SAMPLE_BYTES).decode().splitlines(keepends=True) * 2
    bad = {12_345: "2,", 15_000: "nan,", 20_001: "abc,"}
    for number, start in bad.items():
        lines[number - 1] = start + lines[number - 1].split(",", 1)[1]
    lines[21_000 - 1] = "1,2,3\n"
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress("".join(lines).encode()))

    scan = HiggsScan(str(path), skip_bad=True, chunk_bytes=1 << 20)
    kept = sum(t.num_rows for t in scan)
    assert (kept, scan.bad_rows, scan.lines) == (len(lines) - 4, 4, len(lines))
    assert [e.split(":")[0] for e in scan.bad_examples] == ["line 12,345", "line 15,000", "line 20,001", "line 21,000"]
    with pytest.raises(UsageError, match="line 12,345: label '2' is not 0 or 1"):
        for _ in HiggsScan(str(path), chunk_bytes=1 << 20):
            pass


# --- synth ------------------------------------------------------------------------------------


def test_synth_is_valid_higgs_and_reproducible(tmp_path):
    a = write_synth(str(tmp_path / "a.csv"), 250_001, seed=3, **QUIET)  # crosses two block boundaries
    b = write_synth(str(tmp_path / "b.csv.gz"), 250_001, seed=3, **QUIET)
    c = write_synth(str(tmp_path / "c.csv"), 1_000, seed=4, **QUIET)
    assert check_higgs(a) == check_higgs(b) == 250_001
    assert Path(a).read_bytes() == gzip.decompress(Path(b).read_bytes())
    assert Path(a).read_bytes()[:2_000] != Path(c).read_bytes()[:2_000]


def test_synth_label_is_learnable(tmp_path):
    rows = raw_rows(write_synth(str(tmp_path / "s.csv"), 50_000, **QUIET))
    label, m_bb = rows[:, 0], rows[:, COLUMNS.index("m_bb")]
    assert 0.35 < label.mean() < 0.65  # balanced enough
    near = np.abs(np.log(m_bb)) < 0.2
    assert label[near].mean() - label[~near].mean() > 0.1  # the signal is there to find


def test_synth_refuses_to_overwrite(tmp_path):
    (tmp_path / "s.csv").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        write_synth(str(tmp_path / "s.csv"), 10, **QUIET)
    assert (tmp_path / "s.csv").read_text() == "mine"
