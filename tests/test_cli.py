"""The real `raypkg` CLI in a subprocess: bad input ends in one `error:` line, exit code 2, no run directory.

Every case fails in the checks before Ray starts, so each run takes about a second (imports).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raypkg.data import sample_path

REPO = Path(__file__).resolve().parents[1]


def raypkg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's raypkg, whatever is installed
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "raypkg.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def sample_lines(n: int = 50) -> list[str]:
    with gzip.open(sample_path(), "rt") as f:
        return [next(f) for _ in range(n)]


def edit_line_10(edit):
    """Data file writer: the first 50 sample rows with line 10's fields replaced by edit(fields)."""

    def make(path: Path) -> None:
        lines = sample_lines()
        lines[9] = ",".join(edit(lines[9].rstrip("\n").split(","))) + "\n"
        path.write_text("".join(lines))

    return make


def header_file(path: Path) -> None:
    path.write_text(",".join(["label", *(f"f{i}" for i in range(28))]) + "\n" + "".join(sample_lines()))


def truncated_gzip(path: Path) -> None:
    data = Path(sample_path()).read_bytes()
    path.write_bytes(data[: len(data) // 2])


# name: (data file writer or None, sweep/summarize arguments after the command, expected in the message)
# "{data}" in the arguments becomes the written file's path.
CASES = {
    "missing data": (None, ["sweep", "--data", "nope.csv"], "data file not found: nope.csv"),
    "header row": (header_file, ["sweep", "--data", "{data}"], "line 1: a header row?"),
    "28 columns": (edit_line_10(lambda f: f[:-1]), ["sweep", "--data", "{data}"], "line 10: 28 columns"),
    "label 2": (edit_line_10(lambda f: ["2", *f[1:]]), ["sweep", "--data", "{data}"], "line 10: label '2'"),
    "truncated gzip": (truncated_gzip, ["sweep", "--data", "{data}"], "gzip stream is cut short"),
    "unknown arm": (None, ["sweep", "--arms", "tiny,bogus"], "unknown arm 'bogus'"),
    "splits too large": (None, ["sweep", "--n-train", "20000"], "has 10,984 rows"),
    "n-test not a number": (None, ["sweep", "--n-test", "abc"], "--n-test must be a whole number"),
    "unknown format": (None, ["sweep", "--format", "xml"], "unknown --format 'xml'"),
    "summarize non-sweep": (None, ["summarize", "."], "not a raypkg run directory"),
    "n-train a word": (None, ["sweep", "--n-train", "lots"], "train size 'lots' must be a whole number of rows >= 1 or 'all'"),
    "data dir not prepared": (None, ["sweep", "--data", "."], "is a directory without manifest.json"),
    "prepare over a file": (header_file, ["data", "prepare", "{data}", "{data}"], "already exists"),
    "prepare bad row": (edit_line_10(lambda f: f + ["1"]), ["data", "prepare", "{data}", "out"], "line 10: 30 columns"),
    "synth no rows": (None, ["data", "synth", "s.csv", "--rows", "0"], "--rows must be at least 1"),
    "synth rows a word": (None, ["data", "synth", "s.csv", "--rows", "many"], "--rows must be a whole number (got"),
    "fetch refused": (None, ["data", "fetch", "--url", "http://127.0.0.1:9/HIGGS.csv.gz", "--dest", "dl"],
                      "cannot download http://127.0.0.1:9/HIGGS.csv.gz"),
    "fetch missing file": (None, ["data", "fetch", "--url", "nope.csv.gz", "--dest", "dl"], "nope.csv.gz not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(tmp_path, case):
    make, args, expected = CASES[case]
    data = tmp_path / "data.csv"  # gzip or not is told by content
    if make:
        make(data)
    storage = tmp_path / "runs"
    args = [a.replace("{data}", str(data)) for a in args]
    if args[0] == "sweep":
        args += ["--storage", str(storage), "--name", "run"]

    proc = raypkg(*args, cwd=tmp_path)

    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert not storage.exists()  # nothing that could pass for a run
    assert sorted(p.name for p in tmp_path.iterdir()) == (["data.csv"] if make else [])


def test_arms_lists_the_registered_arms(tmp_path):
    proc = raypkg("arms", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [
        ("tiny", "481"), ("small", "753"), ("medium", "10,241"), ("large", "803,329"),
        ("l2", "803,329"), ("dropout", "803,329"), ("combined", "803,329"), ("l1", "803,329"), ("l1_l2", "803,329"),
    ]  # fmt: skip


@pytest.fixture
def empty_sweep(tmp_path) -> Path:
    """A sweep that has started (sweep.json) but trained nothing yet."""
    run = tmp_path / "run"
    (run / "arms").mkdir(parents=True)
    trial = {"name": "tiny-n100-s0", "arm": {"name": "tiny", "hidden": [16]}, "n_train": 100, "seed": 0}
    (run / "sweep.json").write_text(json.dumps({"config": {}, "rows": {}, "trials": [trial]}))
    return run


RESULT_CASES = {  # name: (arguments, with {run} for the sweep, expected in the one error line)
    "plot a non-sweep": (["plot", "."], "not a raypkg run directory"),
    "plot an empty sweep": (["plot", "{run}"], "has no trained epochs yet"),
    "plot to a .txt": (["plot", "{run}", "--out", "f.txt"], "give a .png, .svg or .pdf file"),
    "plot into a missing dir": (["plot", "{run}", "--out", "no/such/f.png"], "is not a writable directory"),
    "plot an unknown metric": (["plot", "{run}", "--metric", "f1"], "unknown --metric 'f1'"),
    "compare an unknown arm": (["compare", "{run}", "tiny", "huge"], "unknown arm 'huge' in compare"),
    "compare an empty sweep": (["compare", "{run}", "tiny", "tiny"], "two different arms"),
    "report an empty sweep": (["report", "{run}"], "has no trained epochs yet"),
    "report a non-sweep": (["report", "."], "not a raypkg run directory"),
}


@pytest.mark.parametrize("case", list(RESULT_CASES))
def test_bad_result_commands_are_one_error_line(empty_sweep, case):
    args, expected = RESULT_CASES[case]
    before = sorted(p.name for p in empty_sweep.parent.rglob("*"))
    proc = raypkg(*[a.replace("{run}", str(empty_sweep)) for a in args], cwd=empty_sweep.parent)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert proc.stdout == "" and sorted(p.name for p in empty_sweep.parent.rglob("*")) == before  # nothing written
