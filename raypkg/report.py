"""One page per sweep (Markdown and HTML): what was run, how to run it again, what came out.

The page holds the summary table (a row per arm and size), the learning-curve figures, the data-size
figure when the sweep has several sizes, the settings, the command that reproduces the sweep, and
the versions it ran with. Figures and tidy tables are written beside it.
"""

from __future__ import annotations

import html
import json
import os
import time
from importlib import metadata

from raypkg.config import SweepConfig
from raypkg.errors import UsageError, make_writable_dir
from raypkg.plots import GROUPS, plot_curves, plot_sizes
from raypkg.results import format_rows, load_rows, load_sweep, write_tables

PACKAGES = ("raypkg", "ray", "tensorflow", "tf_keras", "pyarrow", "numpy")


def write_report(run_dir: str, out_dir: str) -> str:
    """Write out_dir/report.md, report.html and the figures; return the Markdown file's path."""
    sweep = load_sweep(run_dir)
    trials = load_rows(run_dir)
    if not any(t.get("epochs") for t in trials):
        raise UsageError(f"{run_dir} has no trained epochs yet: nothing to report")
    make_writable_dir(out_dir, "--out")
    figures = draw_figures(run_dir, out_dir, trials)
    tables = write_tables(run_dir)
    cfg = SweepConfig.from_dict(sweep["config"])
    page = {
        "title": f"raypkg sweep {os.path.basename(os.path.abspath(run_dir))}",
        "summary": format_rows(trials, "table", by="group"),
        "failed": [t for t in trials if t["status"] == "failed"],
        "figures": figures,
        "settings": json.dumps(sweep["config"], indent=1),
        "rows": sweep["rows"],
        "command": reproduce_command(cfg),
        "versions": versions(),
        "tables": {k: os.path.relpath(v, out_dir) for k, v in tables.items()},
        "made": time.strftime("%Y-%m-%d %H:%M"),
    }
    md = os.path.join(out_dir, "report.md")
    write_text(md, markdown(page))
    write_text(os.path.join(out_dir, "report.html"), to_html(page))
    return md


def draw_figures(run_dir: str, out_dir: str, trials: list[dict]) -> list[tuple[str, str]]:
    """[(file name, caption)] of the figures this sweep supports."""
    arms = {t["arm"] for t in trials if t.get("epochs")}
    figures = []
    for group, members in GROUPS.items():
        if group != "all" and len(arms & set(members)) >= 2:
            name = f"curves_{group}.png"
            plot_curves(run_dir, os.path.join(out_dir, name), group=group)
            figures.append((name, f"Learning curves, {group} arms: train solid, validation dashed (BCE)."))
    if not figures:
        plot_curves(run_dir, os.path.join(out_dir, "curves_all.png"), group="all")
        figures.append(("curves_all.png", "Learning curves: train solid, validation dashed (BCE)."))
    if len({t["n_train"] for t in trials}) > 1 and any(t["status"] == "done" for t in trials):
        plot_sizes(run_dir, os.path.join(out_dir, "sizes.png"))
        figures.append(("sizes.png", "Min validation BCE and test AUC by training-set size."))
    return figures


def reproduce_command(cfg: SweepConfig) -> str:
    """The `raypkg sweep` command line that runs the same grid with the same settings."""
    tc, res, sp = cfg.train, cfg.resources, cfg.splits
    sizes = ",".join("all" if s is None else str(s) for s in (cfg.train_sizes or (sp.n_train,)))
    parts = [
        "raypkg sweep", f"--data {cfg.data}", f"--arms {','.join(cfg.arms)}" if cfg.arms else "",
        f"--n-validation {sp.n_validation}", f"--train-sizes {sizes}",
        f"--n-test {sp.n_test}" if sp.n_test is not None else "", f"--seeds {cfg.seeds}", f"--seed {tc.seed}",
        f"--max-epochs {tc.max_epochs}", f"--patience {tc.patience}", f"--batch-size {tc.batch_size}",
        f"--scheduler {cfg.scheduler}",
        f"--grace-period {cfg.asha.grace_period} --reduction-factor {cfg.asha.reduction_factor:g}"
        if cfg.scheduler == "asha" else "",
        f"--workers {res.workers}", f"--cpus-per-worker {res.cpus_per_worker}",
        f"--gpus-per-worker {res.gpus_per_worker:g}" if res.gpus_per_worker else "",
    ]  # fmt: skip
    command = " ".join(p for p in parts if p)
    if cfg.custom_arms:
        command += "   # plus a study file with the [arm.*] tables of: " + ", ".join(a["name"] for a in cfg.custom_arms)
    return command


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def markdown(page: dict) -> str:
    lines = [f"# {page['title']}", "", f"Made {page['made']}.", "", "## Summary", "",
             "A row per arm and training size; mean and standard deviation over the seeds that finished.", "",
             "```", page["summary"], "```", ""]  # fmt: skip
    if page["failed"]:
        lines += ["Failed trials:", ""] + [f"- `{t['trial']}`: {t.get('error', '')}" for t in page["failed"]] + [""]
    lines += ["## Figures", ""]
    for name, caption in page["figures"]:
        lines += [f"![{caption}]({name})", "", caption, ""]
    rows = page["rows"]
    lines += ["## Settings", "",
              f"Rows: {rows['total']:,} in the file; validation {rows['n_validation']:,}, train {rows['n_train']:,}, "
              f"test {rows['n_test']:,}.", "", "```json", page["settings"], "```", "",
              "## Reproduce", "", "```bash", page["command"], "```", "",
              "## Tables", "", *[f"- {name}: `{path}` (and `.parquet`)" for name, path in page["tables"].items()], "",
              "## Versions", "", *[f"- {k} {v}" for k, v in page["versions"].items()], ""]  # fmt: skip
    return "\n".join(lines)


def to_html(page: dict) -> str:
    esc = html.escape
    figures = "".join(f'<figure><img src="{esc(n)}" alt="{esc(c)}"><figcaption>{esc(c)}</figcaption></figure>'
                      for n, c in page["figures"])  # fmt: skip
    failed = "".join(f"<li><code>{esc(t['trial'])}</code>: {esc(t.get('error', ''))}</li>" for t in page["failed"])
    versions = "".join(f"<li>{esc(k)} {esc(v)}</li>" for k, v in page["versions"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(page['title'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}
img{{max-width:100%}}</style></head><body>
<h1>{esc(page['title'])}</h1><p>Made {esc(page['made'])}.</p>
<h2>Summary</h2><p>A row per arm and training size; mean and standard deviation over the seeds that finished.</p>
<pre>{esc(page['summary'])}</pre>{f'<p>Failed trials:</p><ul>{failed}</ul>' if failed else ''}
<h2>Figures</h2>{figures}
<h2>Settings</h2><pre>{esc(page['settings'])}</pre>
<h2>Reproduce</h2><pre>{esc(page['command'])}</pre>
<h2>Versions</h2><ul>{versions}</ul>
</body></html>
"""


def write_text(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
