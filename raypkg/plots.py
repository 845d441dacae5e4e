"""Figures of a sweep, drawn from its tidy tables: the tutorial's learning curves and the data-size plot.

Every figure is built from rows (`epoch_rows`, `results.load_rows`), never from Ray's files, so a
sweep still running or with failed trials plots what it has.
"""

from __future__ import annotations

import os
import statistics

from raypkg.errors import UsageError
from raypkg.results import METRIC, epoch_rows, load_rows

GROUPS = {  # the tutorial's two figures, and everything
    "size": ("tiny", "small", "medium", "large"),
    "regularizer": ("tiny", "large", "l2", "dropout", "combined", "l1", "l1_l2"),
    "all": (),
}
CURVE_METRICS = ("binary_crossentropy", "accuracy", "auc", "loss")
YLIM = {"binary_crossentropy": (0.5, 0.7)}  # the tutorial's range: where the arms differ


def check_out(out: str) -> str:
    """`out` if a figure can be written there (png, svg or pdf, in a writable directory)."""
    if os.path.splitext(out)[1].lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--out {out}: give a .png, .svg or .pdf file")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: {folder} is not a writable directory")
    return out


def plot_curves(run_dir: str, out: str, **kwargs) -> str:
    """Write `curves_figure(run_dir, **kwargs)` to `out` (.png, .svg or .pdf)."""
    out = check_out(out)
    return save(curves_figure(run_dir, **kwargs), out)


def plot_sizes(run_dir: str, out: str) -> str:
    """Write `sizes_figure(run_dir)` to `out` (.png, .svg or .pdf)."""
    out = check_out(out)
    return save(sizes_figure(run_dir), out)


def save(fig, out: str) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(out)
    plt.close(fig)
    return out


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def curves_figure(run_dir: str, metric: str = "binary_crossentropy", group: str = "size", n_train: int | None = None):
    """Train (solid) and validation (dashed) `metric` per epoch, one colour per arm, log-x epochs; with
    several seeds, the mean line and a band from the lowest to the highest seed."""
    if metric not in CURVE_METRICS:
        raise UsageError(f"unknown --metric {metric!r}: use {', '.join(CURVE_METRICS)}")
    if group not in GROUPS:
        raise UsageError(f"unknown --group {group!r}: use {', '.join(GROUPS)}")
    rows = epoch_rows(run_dir)
    if not rows:
        raise UsageError(f"{run_dir} has no trained epochs yet: nothing to plot")
    sizes = sorted({r["n_train"] for r in rows})
    size = n_train if n_train is not None else sizes[-1]
    if size not in sizes:
        raise UsageError(f"--n-train {size:,} is not a size of this sweep: use one of {', '.join(map(str, sizes))}")
    arms = list(dict.fromkeys(r["arm"] for r in rows if r["n_train"] == size))
    arms = [a for a in arms if a in GROUPS[group]] if GROUPS[group] else arms
    if not arms:
        raise UsageError(f"no arm of the {group!r} group in {run_dir}: try --group all")

    from matplotlib.lines import Line2D

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    colours = plt.get_cmap("tab10").colors
    seeds = 1
    for i, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm and r["n_train"] == size]
        seeds = max(seeds, len({r["seed"] for r in mine}))
        for prefix, style in (("", "-"), ("val_", "--")):
            x, mean, low, high = over_seeds(mine, prefix + metric)
            ax.plot(x, mean, style, color=colours[i % 10], linewidth=1.4)
            if any(lo != hi for lo, hi in zip(low, high)):
                ax.fill_between(x, low, high, color=colours[i % 10], alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel(metric.replace("_", " "))
    if metric in YLIM:
        ax.set_ylim(*YLIM[metric])
    handles = [Line2D([], [], color=colours[i % 10], linewidth=2.5, label=arm) for i, arm in enumerate(arms)]
    handles += [Line2D([], [], color="black", linestyle="-", label="train"),
                Line2D([], [], color="black", linestyle="--", label="validation")]  # fmt: skip
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)  # beside the curves
    band = f", {seeds} seeds: mean and min-max band" if seeds > 1 else ""
    ax.set_title(f"{group} arms on {size:,} training rows{band}")
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def over_seeds(rows: list[dict], key: str) -> tuple[list, list, list, list]:
    """(epochs, mean, min, max) of `key` over the seeds that reached each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for r in rows:
        by_epoch.setdefault(r["epoch"], []).append(r[key])
    x = sorted(by_epoch)
    return x, [statistics.fmean(by_epoch[e]) for e in x], [min(by_epoch[e]) for e in x], [max(by_epoch[e]) for e in x]


def sizes_figure(run_dir: str):
    """Min validation BCE and test AUC against training-set size (log x), a line per arm, mean and sd
    over seeds as error bars: the tutorial's first advice, "more data", measured."""
    trials = [t for t in load_rows(run_dir) if t["status"] == "done" and t.get(f"min_{METRIC}") is not None]
    if not trials:
        raise UsageError(f"{run_dir} has no finished trials yet: nothing to plot")

    plt = pyplot()
    panels = [(f"min_{METRIC}", "min validation BCE"), ("test_auc", "test AUC (best weights)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    colours = plt.get_cmap("tab10").colors
    for ax, (key, label) in zip(axes, panels):
        for i, arm in enumerate(dict.fromkeys(t["arm"] for t in trials)):
            points = sorted({t["n_train"] for t in trials if t["arm"] == arm})
            values = [[t[key] for t in trials if t["arm"] == arm and t["n_train"] == n and t.get(key) is not None]
                      for n in points]  # fmt: skip
            kept = [(n, v) for n, v in zip(points, values) if v]
            if not kept:
                continue
            sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in kept]
            ax.errorbar([n for n, _ in kept], [statistics.fmean(v) for _, v in kept], yerr=sd, marker="o",
                        capsize=3, color=colours[i % 10], label=arm)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("training rows (log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.25)
        if ax.containers:
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "no test rows in this sweep", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("more data: each arm's best validation BCE and test AUC by training-set size (mean ± sd over seeds)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig
