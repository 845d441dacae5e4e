"""A sweep's files on disk, read back as one tidy row per trial (or per arm and size). No Ray, no TensorFlow."""

from __future__ import annotations

import csv
import io
import json
import os
import re

from raypkg.errors import UsageError

METRIC = "val_binary_crossentropy"  # what early stopping and "best epoch" are judged on
SWEEP_FILE = "sweep.json"  # settings, written when a sweep starts
SUMMARY_FILE = "summary.json"  # written when a sweep ends: its presence means the sweep finished
HISTORY_FILE = "history.csv"  # one row per epoch, appended by rank 0 while the arm trains
RESULT_FILE = "result.json"  # written by rank 0 once the arm finished
ERROR_FILE = "error.txt"  # why an arm failed
TABLES_DIR = "tables"  # epochs / trials / groups as Parquet and CSV, written when the sweep ends
BEST_WEIGHTS_FILE = "best_weights.npz"  # the best epoch's weights: np.load(...) -> model.set_weights

TRIAL_COLUMNS = (  # (key, header, format) of the per-trial table
    ("trial", "trial", "{}"),
    ("status", "status", "{}"),
    ("params", "params", "{:,}"),
    ("workers", "workers", "{}"),
    ("epochs", "epochs", "{}"),
    ("best_epoch", "best", "{}"),
    (f"min_{METRIC}", "min val BCE", "{:.4f}"),
    ("binary_crossentropy_at_best", "train BCE@best", "{:.4f}"),
    ("val_accuracy_at_best", "val acc@best", "{:.3f}"),
    ("val_auc_at_best", "val AUC@best", "{:.3f}"),
    (f"final_{METRIC}", "final val BCE", "{:.4f}"),
    ("test_binary_crossentropy", "test BCE", "{:.4f}"),
    ("test_auc", "test AUC", "{:.3f}"),
    ("wall_s", "wall s", "{:.0f}"),
    ("stopped_by", "stopped by", "{}"),
)
GROUP_METRICS = (  # per-trial values summarized over seeds as mean and standard deviation
    ("epochs", "epochs", "{:.0f}"),
    ("best_epoch", "best", "{:.0f}"),
    (f"min_{METRIC}", "min val BCE", "{:.4f}"),
    ("binary_crossentropy_at_best", "train BCE@best", "{:.4f}"),
    ("val_auc_at_best", "val AUC@best", "{:.3f}"),
    ("test_binary_crossentropy", "test BCE", "{:.4f}"),
    ("test_auc", "test AUC", "{:.3f}"),
)
TABLES = ("group", "trial")


def arm_dir(run_dir: str, arm: str) -> str:
    return os.path.join(run_dir, "arms", arm)


def write_json(path: str, data) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def read_history(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_sweep(run_dir: str) -> dict:
    sweep_file = os.path.join(run_dir, SWEEP_FILE)
    if not os.path.isfile(sweep_file):
        raise UsageError(f"{run_dir} is not a raypkg run directory (no {SWEEP_FILE}): give a sweep's directory")
    with open(sweep_file) as f:
        return json.load(f)


def load_rows(run_dir: str) -> list[dict]:
    """One row per trial, in the grid's order, from history.csv (+ result.json / error.txt)."""
    sweep = load_sweep(run_dir)
    finished = os.path.exists(os.path.join(run_dir, SUMMARY_FILE))
    return [trial_row(arm_dir(run_dir, t["name"]), t, finished) for t in sweep["trials"]]


def trial_row(path: str, trial: dict, sweep_finished: bool) -> dict:
    from raypkg.arms import Arm

    arm = trial["arm"]
    row: dict = {"trial": trial["name"], "arm": arm["name"], "n_train": trial["n_train"], "seed": trial["seed"],
                 "params": Arm.from_dict(arm).param_count()}  # fmt: skip
    history = os.path.join(path, HISTORY_FILE)
    epochs = read_history(history) if os.path.exists(history) else []
    if epochs:
        best = min(epochs, key=lambda r: r[METRIC])
        row.update({
            "epochs": int(epochs[-1]["epoch"]),
            "best_epoch": int(best["epoch"]),
            f"min_{METRIC}": best[METRIC],
            "binary_crossentropy_at_best": best["binary_crossentropy"],
            "val_accuracy_at_best": best["val_accuracy"],
            "val_auc_at_best": best["val_auc"],
            f"final_{METRIC}": epochs[-1][METRIC],
        })  # fmt: skip
    if os.path.exists(os.path.join(path, RESULT_FILE)):
        with open(os.path.join(path, RESULT_FILE)) as f:
            result = json.load(f)
        row.update(status="done", workers=result.get("workers"), wall_s=result.get("wall_s"),
                   stopped_by=result["stopped_by"], attempts=result.get("attempts"),
                   **{k: v for k, v in result.items() if k.startswith("test_")})  # fmt: skip
    elif os.path.exists(os.path.join(path, ERROR_FILE)):
        with open(os.path.join(path, ERROR_FILE)) as f:
            row.update(status="failed", error=error_line(f.read()))
    else:
        row["status"] = "incomplete" if sweep_finished else ("running" if epochs else "pending")
    return row


def epoch_rows(run_dir: str) -> list[dict]:
    """One row per trial per epoch: trial, arm, n_train, seed, then history.csv's columns."""
    rows = []
    for trial in load_sweep(run_dir)["trials"]:
        path = os.path.join(arm_dir(run_dir, trial["name"]), HISTORY_FILE)
        if os.path.exists(path):
            keys = {"trial": trial["name"], "arm": trial["arm"]["name"], "n_train": trial["n_train"], "seed": trial["seed"]}
            rows += [{**keys, **epoch, "epoch": int(epoch["epoch"])} for epoch in read_history(path)]
    return rows


def write_tables(run_dir: str) -> dict[str, str]:
    """tables/{epochs,trials,groups}.{parquet,csv}: the sweep as tidy tables for pandas, DuckDB or a
    spreadsheet (a row per trial per epoch; per trial; per arm and size). Returns {name: csv path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import csv as pacsv

    folder = os.path.join(run_dir, TABLES_DIR)
    os.makedirs(folder, exist_ok=True)
    trials = load_rows(run_dir)
    written = {}
    for name, rows in (("epochs", epoch_rows(run_dir)), ("trials", trials), ("groups", group_rows(trials))):
        keys = list(dict.fromkeys(k for row in rows for k in row))  # every column, in first-seen order
        table = pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])
        if "attempts" in table.column_names:  # a list per trial: fine in Parquet, not in CSV
            table = table.set_column(table.column_names.index("attempts"), "attempts",
                                     pa.array([" ".join(map(str, a or [])) for a in table["attempts"].to_pylist()]))  # fmt: skip
        for ext, write in (("parquet", pq.write_table), ("csv", pacsv.write_csv)):
            path = os.path.join(folder, f"{name}.{ext}")
            write(table, path + ".tmp")
            os.replace(path + ".tmp", path)  # a reader never sees half a table
        written[name] = os.path.join(folder, f"{name}.csv")
    return written


def group_rows(rows: list[dict]) -> list[dict]:
    """One row per (arm, train size), in the grid's order: mean and standard deviation over the seeds
    that finished (`seeds` counts them; `seeds_total` the grid's)."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["n_train"]), []).append(row)
    out = []
    for (arm, n_train), members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        group = {"arm": arm, "n_train": n_train, "seeds": len(done), "seeds_total": len(members),
                 "status": summarize_status(members)}  # fmt: skip
        for key, _, _ in GROUP_METRICS:
            values = [r[key] for r in done if r.get(key) is not None]
            group[f"{key}_mean"] = statistics.fmean(values) if values else None
            group[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(group)
    return out


def summarize_status(members: list[dict]) -> str:
    counts: dict[str, int] = {}
    for row in members:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return next(iter(counts)) if len(counts) == 1 else " ".join(f"{n} {s}" for s, n in counts.items())


def error_line(text: str) -> str:
    """The line of a (Ray-wrapped) traceback that says what went wrong: its last `SomeError: ...` line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b[^ ]*:", line)]
    line = (named or lines or ["unknown error"])[-1]
    return line if len(line) <= 300 else line[:300] + "..."


def format_rows(rows: list[dict], fmt: str, by: str = "trial") -> str:
    """Trial rows (as load_rows gives them) as a table, CSV or JSON, per trial or grouped over seeds."""
    if by not in TABLES:
        raise UsageError(f"unknown --by {by!r}: use {' or '.join(TABLES)}")
    if by == "group":
        rows = group_rows(rows)
        columns = [("arm", "arm", "{}"), ("n_train", "train rows", "{:,}"), ("seeds", "seeds", "{}"),
                   ("status", "status", "{}")]  # fmt: skip
        for key, header, form in GROUP_METRICS:
            columns += [(f"{key}_mean", header, form), (f"{key}_sd", "±sd", form)]
    else:
        columns = list(TRIAL_COLUMNS)
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        keys = [k for k, _, _ in columns] + ([] if by == "group" else ["arm", "n_train", "seed", "error"])
        writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    if fmt == "table":
        return format_table(rows, columns)
    raise UsageError(f"unknown --format {fmt!r}: use table, csv or json")


def format_table(rows: list[dict], columns: list[tuple]) -> str:
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[k]) if row.get(k) is not None else "-" for k, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    errors = [f"{r['trial']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(lines + errors)
