"""Synthetic HIGGS-format files of any size, for scale tests and benchmarks (no download needed).

Features follow the rough shapes of the real ones (positive momenta and masses, centred etas, flat
phis, three b-tag levels); the label is drawn from a non-linear function of them, so that a model
can learn something and bigger models can learn more. Rows are made in fixed blocks, each from its
own seeded generator: the same (rows, seed) gives the same bytes, in flat memory.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pyarrow as pa
from pyarrow import csv

from raypkg.data import COLUMNS, FEATURES
from raypkg.errors import UsageError

BLOCK_ROWS = 100_000
BTAG_LEVELS = np.array([0.0, 1.0865380764007568, 2.1730761528015137], dtype=np.float32)


def synth_block(rows: int, seed: int, block: int) -> pa.Table:
    """`rows` rows of block number `block`: float32 HIGGS columns, label first."""
    rng = np.random.default_rng([seed, block])
    cols = {}
    for name in FEATURES:
        if name.endswith("_phi"):
            cols[name] = rng.uniform(-1.74, 1.74, rows)
        elif name.endswith("_eta"):
            cols[name] = np.clip(rng.normal(0.0, 1.0, rows), -2.5, 2.5)
        elif name.endswith("_btag"):
            cols[name] = rng.choice(BTAG_LEVELS, rows, p=[0.55, 0.2, 0.25])
        else:  # momenta, energies, masses
            cols[name] = rng.lognormal(0.0, 0.45, rows)
    logit = (
        1.4 * np.log(cols["m_wbb"])
        - 3.0 * np.log(cols["m_bb"]) ** 2
        + 0.8 * np.tanh(cols["jet_1_pt"] - cols["missing_energy_magnitude"])
        + 0.4 * (cols["jet_1_btag"] > 0) * (cols["jet_2_btag"] > 0)
        + 0.3 * np.cos(cols["lepton_phi"] - cols["missing_energy_phi"])
        + 0.35
    )
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return pa.table({"label": label, **{k: v.astype(np.float32) for k, v in cols.items()}}).select(list(COLUMNS))


def write_synth(out: str, rows: int, seed: int = 0, log=print) -> str:
    """Write `rows` synthetic rows to `out` (gzip when it ends in .gz); refuses to overwrite."""
    if rows < 1:
        raise UsageError(f"--rows must be at least 1 (got {rows:,})")
    if os.path.exists(out):
        raise UsageError(f"{out} already exists: give a new file name")
    part = out + ".part"
    try:
        raw = gzip.open(part, "wb", compresslevel=1) if out.endswith(".gz") else open(part, "wb")
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror}): give a writable path") from None
    options = csv.WriteOptions(include_header=False, quoting_style="none")
    try:
        with raw, pa.PythonFile(raw, mode="w") as sink:
            for block, start in enumerate(range(0, rows, BLOCK_ROWS)):
                csv.write_csv(synth_block(min(BLOCK_ROWS, rows - start), seed, block), sink, options)
    except BaseException:
        os.remove(part)  # nothing half-written under any name a later command would read
        raise
    os.replace(part, out)
    log(f"synth: {out} ({rows:,} rows, seed {seed}, {os.path.getsize(out):,} bytes)")
    return out
