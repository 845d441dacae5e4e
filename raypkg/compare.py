"""Is arm A better than arm B? The difference of their means over seeds, with a bootstrap interval.

Seeds are resampled with replacement within each arm (a percentile bootstrap of the difference of
means); the difference is called real when its 95% interval leaves out zero. With fewer than two
seeds an arm has no spread to resample, and the verdict says so instead of guessing.
"""

from __future__ import annotations

import statistics

from raypkg.errors import UsageError
from raypkg.results import METRIC, load_rows, load_sweep

MEASURES = ((f"min_{METRIC}", "min val BCE", "lower"), ("test_auc", "test AUC", "higher"))


def compare(run_dir: str, a: str, b: str, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per training size both arms ran and per measure: means, difference, 95% CI, verdict."""
    import numpy as np

    arms = list(dict.fromkeys(t["arm"]["name"] for t in load_sweep(run_dir)["trials"]))
    for arm in (a, b):
        if arm not in arms:
            raise UsageError(f"unknown arm {arm!r} in compare: {run_dir} has {', '.join(arms)}")
    if a == b:
        raise UsageError(f"compare needs two different arms (got {a!r} twice)")
    done = [t for t in load_rows(run_dir) if t["status"] == "done"]
    rng = np.random.default_rng(seed)
    out = []
    sizes = sorted({t["n_train"] for t in done if t["arm"] == a} & {t["n_train"] for t in done if t["arm"] == b})
    for n in sizes:
        for key, label, better in MEASURES:
            va = [t[key] for t in done if t["arm"] == a and t["n_train"] == n and t.get(key) is not None]
            vb = [t[key] for t in done if t["arm"] == b and t["n_train"] == n and t.get(key) is not None]
            if not va or not vb:
                continue
            row = {"n_train": n, "measure": label, "a": a, "b": b, "seeds_a": len(va), "seeds_b": len(vb),
                   "mean_a": statistics.fmean(va), "mean_b": statistics.fmean(vb)}  # fmt: skip
            row["difference"] = row["mean_a"] - row["mean_b"]
            row["ci_low"], row["ci_high"], row["verdict"] = None, None, "needs 2+ seeds per arm to tell"
            if len(va) > 1 and len(vb) > 1:
                diffs = rng.choice(va, (resamples, len(va))).mean(1) - rng.choice(vb, (resamples, len(vb))).mean(1)
                row["ci_low"], row["ci_high"] = (float(q) for q in np.percentile(diffs, [2.5, 97.5]))
                row["verdict"] = verdict(row, better)
            out.append(row)
    if not out:
        raise UsageError(f"{a} and {b} have no finished trials of the same training size in {run_dir}")
    return out


def verdict(row: dict, better: str) -> str:
    if row["ci_low"] <= 0 <= row["ci_high"]:
        return "no significant difference"
    a_lower = row["difference"] < 0
    return f"{row['a']} better" if a_lower == (better == "lower") else f"{row['b']} better"


def format_comparison(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if r["ci_low"] is not None else "[n/a]"
        lines.append(
            f"{r['n_train']:>11,} rows  {r['measure']:<12} {r['a']} {r['mean_a']:.4f} (n={r['seeds_a']})  "
            f"{r['b']} {r['mean_b']:.4f} (n={r['seeds_b']})  A-B {r['difference']:+.4f}  95% CI {ci}  {r['verdict']}"
        )
    return "\n".join(lines)
