"""Asynchronous successive halving (ASHA) across a sweep's trials, decided inside the trials.

At each rung (epochs grace_period x reduction_factor^k) a trial compares its best val BCE so far with
those of the trials that reached the rung before it; unless it is in the best 1/reduction_factor of
them it stops, as Tune's ASHAScheduler would stop it (same rungs, same percentile cutoff; the first
trial at a rung always continues). The difference is who stops it: the trial ends its own `fit`
and finishes normally (test score, result.json). Tune stopping a Ray Train V2 trainer from outside
leaves its workers' placement group behind and the next trial waits for those CPUs forever
(ray-project/ray#54305), so Tune itself runs FIFO.

The rungs live in one Ray actor per sweep; rank 0 of each trial asks it, and broadcasts the answer
to the other workers so they stop on the same epoch.
"""

from __future__ import annotations

import os

import numpy as np

from raypkg.config import AshaConfig
from raypkg.results import HISTORY_FILE, METRIC, arm_dir, read_history


def rung_epochs(asha: AshaConfig, max_epochs: int) -> list[int]:
    """Epochs at which trials are compared: grace_period, x reduction_factor, ... below max_epochs."""
    rungs, epoch = [], float(asha.grace_period)
    while round(epoch) < max_epochs:
        if not rungs or round(epoch) > rungs[-1]:
            rungs.append(round(epoch))
        epoch *= asha.reduction_factor
    return rungs


class Rungs:
    """The values recorded at each rung and the decision each trial got there (lower is better)."""

    def __init__(self, asha: AshaConfig, max_epochs: int):
        self.rf = asha.reduction_factor
        self.epochs = rung_epochs(asha, max_epochs)
        self.recorded: dict[int, dict[str, float]] = {e: {} for e in self.epochs}
        self.decisions: dict[tuple[str, int], dict] = {}

    def decide(self, trial: str, epoch: int, value: float) -> dict:
        """Record `trial`'s `value` at rung `epoch`; {"continue": bool, "cutoff": float | None, ...}.

        Asking again for the same trial and rung (a restarted worker group re-running the epoch)
        returns the first answer, so a trial never gets two verdicts at one rung."""
        if (trial, epoch) in self.decisions:
            return self.decisions[(trial, epoch)]
        others = list(self.recorded[epoch].values())
        cutoff = float(np.percentile(others, 100 / self.rf)) if others else None
        decision = {"epoch": epoch, "value": value, "cutoff": cutoff, "rivals": len(others),
                    "continue": cutoff is None or value <= cutoff}  # fmt: skip
        self.recorded[epoch][trial] = value
        self.decisions[(trial, epoch)] = decision
        return decision

    def replay(self, trial: str, values: list[float]) -> None:
        """Load a trial's recorded history (val BCE per epoch) from before a resume: the rungs it went
        past count as reached and passed. The rung at its last epoch is not, as it may not have been asked."""
        best = np.minimum.accumulate(values) if values else []
        for epoch in self.epochs:
            if epoch < len(values):
                self.recorded[epoch][trial] = float(best[epoch - 1])
                self.decisions[(trial, epoch)] = {"epoch": epoch, "value": float(best[epoch - 1]), "cutoff": None,
                                                  "rivals": None, "continue": True}  # fmt: skip


def start_rungs(asha: AshaConfig, max_epochs: int, run_dir: str, trial_names: list[str]):
    """The sweep's rungs actor, loaded with the histories already in `run_dir` (a resumed sweep)."""
    import ray

    actor = ray.remote(num_cpus=0)(Rungs).remote(asha, max_epochs)
    for name in trial_names:
        path = os.path.join(arm_dir(run_dir, name), HISTORY_FILE)
        if os.path.isfile(path):
            actor.replay.remote(name, [row[METRIC] for row in read_history(path)])
    return actor
