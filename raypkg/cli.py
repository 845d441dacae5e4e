"""`raypkg` command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import contextlib
import sys
from functools import wraps
from typing import Annotated, Optional

import typer

from raypkg.config import ResourcesConfig, Splits, SweepConfig, TrainConfig
from raypkg.errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compare how model capacity and regularization change overfitting on HIGGS, with Ray.")  # fmt: skip
data_app = typer.Typer(no_args_is_help=True, help="Get HIGGS once: fetch it, prepare it for fast reads, or synthesize one.")
app.add_typer(data_app, name="data")
_S, _T, _R = Splits(), TrainConfig(), ResourcesConfig()
SAMPLE_N_TRAIN = 9_000  # the shipped sample has 10,984 rows: 1,000 validation + 9,000 train + 984 test


def one_line_errors(fn):
    """Bad input ends the command with `error: ...` on stderr and exit code 2, never a traceback."""

    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None

    return run


@app.command()
@one_line_errors
def arms() -> None:
    """List the registered arms: layers, regularization, parameter count."""
    from raypkg.arms import ARMS

    width = max(len(n) for n in ARMS)
    for arm in ARMS.values():
        print(f"{arm.name:<{width}}  {arm.param_count():>9,} params  {arm.describe()}")


def parse_count(value: str | None, flag: str, word: str = "auto") -> int | None:
    """A row count such as 10000 or 1e6; None for `word` (auto, all)."""
    if value is None or value == word:
        return None
    try:
        number = float(value)  # accepts 5e5
    except ValueError:
        number = 0.5
    if not number.is_integer():
        raise UsageError(f"{flag} must be a whole number{f' or {word!r}' if word else ''} (got {value!r})")
    return int(number)


@app.command()
@one_line_errors
def sweep(
    data: Annotated[Optional[str], typer.Option(help="HIGGS-format .csv/.csv.gz, or a directory made by `raypkg data prepare` [default: the shipped 10,984-row sample]")] = None,
    arms: Annotated[str, typer.Option(help="Comma-separated arm names [default: all, see `raypkg arms`]")] = "",
    n_validation: Annotated[int, typer.Option(help="Validation rows: the file's first rows")] = _S.n_validation,
    n_train: Annotated[Optional[str], typer.Option(help=f"Training rows: the rows after validation, or 'all' up to the test rows [default: {_S.n_train:,}; 9,000 for the shipped sample, leaving 984 test rows]")] = None,
    n_test: Annotated[str, typer.Option(help="Test rows: the file's last rows; auto = UCI's 500,000 or what is left")] = "auto",
    max_epochs: Annotated[int, typer.Option()] = _T.max_epochs,
    patience: Annotated[int, typer.Option(help="Epochs without a new min val_binary_crossentropy before stopping")] = _T.patience,
    batch_size: Annotated[int, typer.Option(help="Global batch, split evenly over the workers")] = _T.batch_size,
    seed: Annotated[int, typer.Option()] = _T.seed,
    report_every: Annotated[int, typer.Option(help="Epochs between progress reports to Ray Tune")] = _T.report_every,
    in_memory_rows: Annotated[int, typer.Option(help="A worker's shard of at most this many rows is held in memory; a larger one is streamed from Ray's object store every epoch")] = _T.in_memory_rows,
    workers: Annotated[int, typer.Option(help="Ray Train workers per arm")] = _R.workers,
    cpus_per_worker: Annotated[int, typer.Option()] = _R.cpus_per_worker,
    max_concurrent: Annotated[Optional[int], typer.Option(help="Arms training at once [default: as many as the CPUs hold]")] = None,
    storage: Annotated[str, typer.Option(help="Directory that holds run directories")] = SweepConfig.storage,
    name: Annotated[Optional[str], typer.Option(help="Run directory name [default: sweep-<date>-<time>]")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address [default: $RAY_ADDRESS, else a local Ray]")] = None,
    format: Annotated[str, typer.Option(help="Summary format: table, csv or json")] = "table",
) -> None:
    """Train each arm as a Ray Tune trial of a Ray Train TensorflowTrainer, then print the summary."""
    from raypkg.data import sample_path
    from raypkg.results import format_rows, load_rows
    from raypkg.sweep import run_sweep

    if n_train is None:
        n_train = str(_S.n_train if data else SAMPLE_N_TRAIN)
    cfg = SweepConfig(
        data=data or sample_path(),
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
        splits=Splits(n_validation, parse_count(n_train, "--n-train", "all"), parse_count(n_test, "--n-test")),
        train=TrainConfig(batch_size=batch_size, max_epochs=max_epochs, patience=patience, seed=seed,
                          report_every=report_every, in_memory_rows=in_memory_rows),  # fmt: skip
        resources=ResourcesConfig(workers, cpus_per_worker, max_concurrent),
        storage=storage,
        name=name,
    )
    format_rows([], format)  # an unknown format fails now, not after the sweep
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the summary alone; Tune prints too
        run_dir = run_sweep(cfg, address=address, log=print)
    print(format_rows(load_rows(run_dir), format))
    print(f"results: {run_dir}", file=sys.stderr)


@app.command()
@one_line_errors
def summarize(
    run_dir: Annotated[str, typer.Argument(help="A sweep's run directory")],
    format: Annotated[str, typer.Option(help="table, csv or json")] = "table",
) -> None:
    """One row per arm: epochs, best epoch, min val BCE and the metrics there, wall time, why it stopped."""
    from raypkg.results import format_rows, load_rows

    print(format_rows(load_rows(run_dir), format))


@data_app.command()
@one_line_errors
def fetch(
    dest: Annotated[str, typer.Option(help="Directory to download into")] = ".",
    url: Annotated[str, typer.Option(help="http(s) URL, s3:// or gs:// path, or a local file")] = "",
    size: Annotated[Optional[int], typer.Option(help="Expected bytes [default: UCI's HIGGS.csv.gz]; 0 skips the check")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected sha256 [default: UCI's HIGGS.csv.gz]; 'skip' skips the check")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds without data before giving up (the partial file is kept)")] = 60.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr")] = True,
) -> None:
    """Download HIGGS.csv.gz (2.8 GB), resuming a partial download; verified by size and sha256."""
    from raypkg.fetch import UCI, UCI_URL, Expected, fetch

    expected = Expected(size=UCI.size if size is None else (size or None),
                        sha256=UCI.sha256 if sha256 is None else (None if sha256 == "skip" else sha256))  # fmt: skip
    print(fetch(url or UCI_URL, dest, expected, timeout=timeout, progress=progress, log=err))


@data_app.command()
@one_line_errors
def prepare(
    src: Annotated[str, typer.Argument(help="HIGGS-format .csv or .csv.gz")],
    dest: Annotated[str, typer.Argument(help="New directory for the Parquet dataset")],
    n_validation: Annotated[int, typer.Option(help="Rows of the validation split: the file's first")] = _S.n_validation,
    n_test: Annotated[str, typer.Option(help="Rows of the test split: the file's last; auto = UCI's 500,000 if the file has more, else 0")] = "auto",
    rows_per_shard: Annotated[int, typer.Option(help="Most rows per Parquet file")] = 250_000,
    skip_bad_rows: Annotated[bool, typer.Option(help="Skip bad rows and count them, instead of stopping at the first")] = False,
) -> None:
    """Check a HIGGS-format file in one streaming pass and write it as Parquet shards per split."""
    from raypkg.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(n_validation=n_validation, n_test=parse_count(n_test, "--n-test"),
                        rows_per_shard=rows_per_shard, skip_bad_rows=skip_bad_rows)  # fmt: skip
    prepare(src, dest, cfg, log=err)
    print(dest)


@data_app.command()
@one_line_errors
def synth(
    out: Annotated[str, typer.Argument(help="File to write (.csv, or .csv.gz to compress)")],
    rows: Annotated[str, typer.Option(help="Number of rows, e.g. 1000000 or 1e6")] = "1e6",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a synthetic HIGGS-format file with a learnable signal, for scale tests and benchmarks."""
    from raypkg.synth import write_synth

    print(write_synth(out, parse_count(rows, "--rows", word="") or 0, seed, log=err))


def err(*args) -> None:
    print(*args, file=sys.stderr)


if __name__ == "__main__":
    app()
