"""`raypkg` command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from functools import wraps
from typing import Annotated, Optional

import typer

from raypkg.config import AshaConfig, ResourcesConfig, Splits, SweepConfig, TrainConfig
from raypkg.errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compare how model capacity and regularization change overfitting on HIGGS, with Ray.")  # fmt: skip
data_app = typer.Typer(no_args_is_help=True, help="Get HIGGS once: fetch it, prepare it for fast reads, or synthesize one.")
app.add_typer(data_app, name="data")
_S, _T, _R, _A = Splits(), TrainConfig(), ResourcesConfig(), AshaConfig()
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


O = Optional  # every sweep setting defaults to None here: "not given", so a study file's value stands


@app.command()
@one_line_errors
def sweep(
    study: Annotated[O[str], typer.Option(help="TOML study file (see jobs/studies/); the flags below override it")] = None,
    resume: Annotated[O[str], typer.Option(help="Continue the sweep NAME in --storage with its stored settings: done trials are kept, the rest continue from their last checkpoint")] = None,
    data: Annotated[O[str], typer.Option(help="HIGGS-format .csv/.csv.gz, or a directory made by `raypkg data prepare` [default: the shipped 10,984-row sample]")] = None,
    arms: Annotated[O[str], typer.Option(help="Comma-separated arm names [default: the tutorial's seven; see `raypkg arms`]")] = None,
    n_validation: Annotated[O[int], typer.Option(help=f"Validation rows: the file's first rows [default: {_S.n_validation:,}]")] = None,
    n_train: Annotated[O[str], typer.Option(help=f"Training rows after validation, or 'all' up to the test rows [default: {_S.n_train:,}; 9,000 for the shipped sample]")] = None,
    train_sizes: Annotated[O[str], typer.Option(help="Grid of training-set sizes, e.g. 1e3,1e4,all (each the first rows of the train split) [default: --n-train]")] = None,
    n_test: Annotated[O[str], typer.Option(help="Test rows: the file's last rows; auto = UCI's 500,000 or what is left [default: auto]")] = None,
    seeds: Annotated[O[int], typer.Option(help="Seeds per arm and size: --seed, --seed+1, ... [default: 1]")] = None,
    seed: Annotated[O[int], typer.Option(help=f"First seed: initial weights and data order [default: {_T.seed}]")] = None,
    max_epochs: Annotated[O[int], typer.Option(help=f"[default: {_T.max_epochs:,}]")] = None,
    patience: Annotated[O[int], typer.Option(help=f"Epochs without a new min val_binary_crossentropy before a trial stops [default: {_T.patience}]")] = None,
    batch_size: Annotated[O[int], typer.Option(help=f"Global batch, split evenly over the workers [default: {_T.batch_size}]")] = None,
    scheduler: Annotated[O[str], typer.Option(help="none, or asha: successive halving across trials on val_binary_crossentropy, on top of --patience [default: none]")] = None,
    grace_period: Annotated[O[int], typer.Option(help=f"asha: epochs before trials are first compared [default: {_A.grace_period}]")] = None,
    reduction_factor: Annotated[O[float], typer.Option(help=f"asha: at each rung (grace period x this^k epochs) a trial goes on only in the best 1/this [default: {_A.reduction_factor:g}]")] = None,
    report_every: Annotated[O[int], typer.Option(help=f"Epochs between progress reports to Ray Tune [default: {_T.report_every}]")] = None,
    checkpoint_every: Annotated[O[int], typer.Option(help=f"Epochs between checkpoints for resume and worker failures [default: {_T.checkpoint_every}]")] = None,
    max_failures: Annotated[O[int], typer.Option(help=f"Times a trial's dead workers are replaced [default: {_T.max_failures}]")] = None,
    in_memory_rows: Annotated[O[int], typer.Option(help=f"A worker's shard of at most this many rows is held in memory, a larger one streamed every epoch [default: {_T.in_memory_rows:,}]")] = None,
    workers: Annotated[O[int], typer.Option(help=f"Ray Train workers per trial [default: {_R.workers}]")] = None,
    cpus_per_worker: Annotated[O[int], typer.Option(help=f"[default: {_R.cpus_per_worker}]")] = None,
    gpus_per_worker: Annotated[O[float], typer.Option(help="> 0 trains on GPUs [default: 0]")] = None,
    max_concurrent: Annotated[O[int], typer.Option(help="Trials at once [default: as many as the CPUs/GPUs hold]")] = None,
    storage: Annotated[O[str], typer.Option(envvar="RAYPKG_STORAGE", help=f"Directory that holds run directories; on a cluster one every node mounts (NFS) [default: {SweepConfig.storage}]")] = None,
    name: Annotated[O[str], typer.Option(help="Run directory name [default: sweep-<date>-<time>]")] = None,
    address: Annotated[O[str], typer.Option(help="Ray cluster address [default: $RAY_ADDRESS, else a local Ray]")] = None,
    format: Annotated[str, typer.Option(help="Summary format: table, csv or json")] = "table",
    by: Annotated[str, typer.Option(help="Summary rows: group (arm and size, mean and sd over seeds) or trial")] = "group",
    report: Annotated[bool, typer.Option("--report", help="Also write the report (as `raypkg report`) to RUN_DIR/report")] = False,
) -> None:
    """Train each arm x size x seed as a Ray Tune trial of a Ray Train data-parallel TensorFlow trainer, then print the summary."""
    given = {k: v for k, v in locals().items() if v is not None}  # the flags on the command line
    flags = {k: v for k, v in given.items() if k not in ("study", "resume", "address", "format", "by", "report")}
    from raypkg.results import format_rows, load_rows
    from raypkg.sweep import run_sweep

    format_rows([], format, by)  # an unknown format fails now, not after the sweep
    cfg = resumed_config(resume, flags) if resume else sweep_config(study, flags)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the summary alone; Tune prints too
        run_dir = run_sweep(cfg, address=address, log=print, resume=bool(resume))
    print(format_rows(load_rows(run_dir), format, by))
    print(f"results: {run_dir}", file=sys.stderr)
    if report:
        from raypkg.report import write_report

        print(f"report: {write_report(run_dir, os.path.join(run_dir, 'report'))}", file=sys.stderr)


def sweep_config(study: str | None, flags: dict) -> SweepConfig:
    """Defaults, then the study file, then the flags given."""
    from raypkg.data import sample_path
    from raypkg.study import build_config, load_study

    settings = load_study(study) if study else {}
    if "n_train" in flags and "train_sizes" in flags:
        raise UsageError("give --n-train or --train-sizes, not both")
    if "n_train" in flags:
        flags["train_sizes"] = flags.pop("n_train")
    if "n_test" in flags:
        flags["n_test"] = parse_count(flags["n_test"], "--n-test")
    settings.update(flags)
    if not settings.get("data"):
        settings["data"] = sample_path()
        settings.setdefault("train_sizes", [SAMPLE_N_TRAIN])  # leaves the sample's last 984 rows for test
    return build_config(settings, where=study or "the command line")


def resumed_config(name: str, flags: dict) -> SweepConfig:
    """The stored settings of the sweep to resume; only where it lives may be given again."""
    import json

    from raypkg.results import SWEEP_FILE

    storage = flags.pop("storage", SweepConfig.storage)
    if flags.pop("name", name) != name:
        raise UsageError("give the sweep to resume as --resume NAME, without a different --name")
    if flags:
        flag = "--" + next(iter(flags)).replace("_", "-")
        raise UsageError(f"{flag} cannot change on --resume: a resumed sweep keeps its stored settings")
    path = os.path.join(storage, name, SWEEP_FILE)
    if not os.path.isfile(path):
        raise UsageError(f"no sweep to resume at {os.path.join(storage, name)}: check --storage and the name")
    with open(path) as f:
        return dataclasses.replace(SweepConfig.from_dict(json.load(f)["config"]), storage=storage, name=name)


@app.command()
@one_line_errors
def summarize(
    run_dir: Annotated[str, typer.Argument(help="A sweep's run directory")],
    format: Annotated[str, typer.Option(help="table, csv or json")] = "table",
    by: Annotated[str, typer.Option(help="group: a row per arm and size, mean and sd over seeds; trial: a row per trial")] = "group",
) -> None:
    """Min val BCE, best epoch, test BCE/AUC of the best weights, per arm and size (or per trial)."""
    from raypkg.results import format_rows, load_rows

    format_rows([], format, by)
    print(format_rows(load_rows(run_dir), format, by))


@app.command()
@one_line_errors
def plot(
    run_dir: Annotated[str, typer.Argument(help="A sweep's run directory")],
    out: Annotated[str, typer.Option(help="Figure file: .png, .svg or .pdf")] = "curves.png",
    metric: Annotated[str, typer.Option(help="binary_crossentropy, accuracy, auc or loss")] = "binary_crossentropy",
    group: Annotated[str, typer.Option(help="size (tiny..large), regularizer (tiny, large and its regularized forms), all, or sizes: the data-size figure")] = "size",
    n_train: Annotated[O[int], typer.Option(help="Training-set size to plot [default: the sweep's largest]")] = None,
) -> None:
    """The tutorial's learning curves (train solid, validation dashed, log-x epochs), or with --group sizes
    min val BCE and test AUC against training-set size."""
    from raypkg.plots import plot_curves, plot_sizes

    if group == "sizes":
        print(plot_sizes(run_dir, out))
    else:
        print(plot_curves(run_dir, out, metric=metric, group=group, n_train=n_train))


@app.command()
@one_line_errors
def compare(
    run_dir: Annotated[str, typer.Argument(help="A sweep's run directory")],
    arm_a: Annotated[str, typer.Argument(help="An arm of the sweep")],
    arm_b: Annotated[str, typer.Argument(help="Another arm of the sweep")],
    format: Annotated[str, typer.Option(help="text or json")] = "text",
) -> None:
    """A minus B in min val BCE and test AUC, per training size, with a 95% bootstrap interval over seeds
    and a verdict: 'A better', 'B better' or 'no significant difference'."""
    import json

    from raypkg.compare import compare, format_comparison

    if format not in ("text", "json"):
        raise UsageError(f"unknown --format {format!r}: use text or json")
    rows = compare(run_dir, arm_a, arm_b)
    print(json.dumps(rows, indent=1) if format == "json" else format_comparison(rows))


@app.command()
@one_line_errors
def report(
    run_dir: Annotated[str, typer.Argument(help="A sweep's run directory")],
    out: Annotated[str, typer.Option(help="Directory for report.md, report.html and the figures")] = "report",
) -> None:
    """One page (Markdown and HTML): summary table, figures, settings, the command to reproduce, versions."""
    from raypkg.report import write_report

    print(write_report(run_dir, out))


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
