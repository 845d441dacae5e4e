"""The real pipeline on a real local Ray: Ray Data splits, 2-worker TensorflowTrainer trials, Tune.

Small data (the shipped sample's real rows), few epochs; nothing about Ray or TensorFlow is mocked.
"""

import csv
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from raypkg.config import ResourcesConfig, Splits, SweepConfig, TrainConfig
from raypkg.data import FEATURES, LABEL, read_higgs, resolve_splits, sample_path, split_higgs
from raypkg.errors import UsageError
from raypkg.results import load_rows, read_history

SPLITS = Splits(n_validation=500, n_train=2_000, n_test=500)
PATIENCE, MAX_EPOCHS = 3, 60


def file_rows() -> np.ndarray:
    """The sample as a (rows, 29) float32 array, parsed without pyarrow or Ray."""
    with gzip.open(sample_path(), "rt") as f:
        return np.array([[float(v) for v in line.split(",")] for line in f], dtype=np.float32)


def as_array(ds) -> np.ndarray:
    batch = ds.take_batch(ds.count(), batch_format="numpy")
    return np.column_stack([batch[c] for c in (LABEL, *FEATURES)])


@pytest.fixture(scope="module")
def sweep_dir(ray_session, tmp_path_factory):
    """One sweep of two arms, each trained by 2 Ray Train workers; Large overfits and stops early."""
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(
        data=sample_path(),
        arms=("tiny", "large"),
        splits=SPLITS,
        train=TrainConfig(max_epochs=MAX_EPOCHS, patience=PATIENCE, report_every=5),
        resources=ResourcesConfig(workers=2),
        storage=str(tmp_path_factory.mktemp("results")),
        name="two-workers",
    )
    return run_sweep(cfg, log=lambda *_: None)


def arm_files(run_dir: str, arm: str) -> tuple[dict, list[dict]]:
    with open(os.path.join(run_dir, "arms", arm, "result.json")) as f:
        result = json.load(f)
    return result, read_history(os.path.join(run_dir, "arms", arm, "history.csv"))


def test_splits_are_the_files_row_ranges(ray_session):
    rows = resolve_splits(SPLITS, 10_984)
    val, train, test = split_higgs(read_higgs(sample_path()), rows)
    expected = file_rows()
    np.testing.assert_array_equal(as_array(val), expected[:500])
    np.testing.assert_array_equal(as_array(train), expected[500:2_500])
    np.testing.assert_array_equal(as_array(test), expected[-500:])


@pytest.mark.parametrize("splits", [SPLITS, Splits(300, 1_234, 777)])  # on file boundaries, and off them
def test_prepared_splits_are_the_raw_files_splits(ray_session, tmp_path, splits):
    from raypkg.prepare import PrepareConfig, prepare, read_prepared

    prepared = str(tmp_path / "prepared")
    prepare(sample_path(), prepared, PrepareConfig(n_validation=500, n_test=500, rows_per_shard=700),
            log=lambda *_: None)  # fmt: skip
    rows = resolve_splits(splits, 10_984)
    expected = file_rows()
    val, train, test = read_prepared(prepared, rows)
    v, t = splits.n_validation, splits.n_train
    np.testing.assert_array_equal(as_array(val), expected[:v])
    np.testing.assert_array_equal(as_array(train), expected[v : v + t])
    np.testing.assert_array_equal(as_array(test), expected[-splits.n_test :])


def test_worker_shards_partition_the_train_rows_in_order(ray_session):
    from raypkg.sweep import shard_datasets

    rows = resolve_splits(SPLITS, 10_984)
    val, train, _ = split_higgs(read_higgs(sample_path()), rows)
    shards = shard_datasets(train, val, workers=2)
    assert sorted(shards) == ["train_0", "train_1", "validation_0", "validation_1"]
    np.testing.assert_array_equal(
        np.concatenate([as_array(shards["train_0"]), as_array(shards["train_1"])]), as_array(train)
    )
    assert shards["validation_0"].count() == shards["validation_1"].count() == 250


def test_two_workers_train_one_model_on_every_row(sweep_dir):
    for arm in ("tiny", "large"):
        result, history = arm_files(sweep_dir, arm)
        assert result["workers"] == 2
        assert result["replicas_agree"] is True  # rank 1's weights equal rank 0's after training
        for epoch in history:  # all-reduced row counts: each epoch is one pass over both shards
            assert epoch["rows"] == SPLITS.n_train
            assert epoch["val_rows"] == SPLITS.n_validation


def test_early_stopping_cuts_the_large_arm_short(sweep_dir):
    result, history = arm_files(sweep_dir, "large")
    assert result["stopped_by"] == "patience"
    assert result["epochs"] < MAX_EPOCHS
    assert result["epochs"] == result["best_epoch"] + PATIENCE
    assert [int(r["epoch"]) for r in history] == list(range(1, result["epochs"] + 1))
    best = min(history, key=lambda r: r["val_binary_crossentropy"])
    assert result["min_val_binary_crossentropy"] == pytest.approx(best["val_binary_crossentropy"])


def test_metrics_are_sane(sweep_dir):
    for arm in ("tiny", "large"):
        _, history = arm_files(sweep_dir, arm)
        for epoch in history:
            for name in ("accuracy", "val_accuracy", "auc", "val_auc"):
                assert 0.0 <= epoch[name] <= 1.0
            # the loss adds nothing to BCE for unregularized arms
            assert epoch["loss"] == pytest.approx(epoch["binary_crossentropy"], rel=1e-4)
        assert history[-1]["val_auc"] > 0.6  # real HIGGS rows are learnable


def test_tensorboard_events_hold_every_epoch(sweep_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, history = arm_files(sweep_dir, "tiny")
    for split, tag in (("train", "epoch_binary_crossentropy"), ("validation", "epoch_binary_crossentropy")):
        events = EventAccumulator(os.path.join(sweep_dir, "arms", "tiny", "tensorboard", split))
        events.Reload()
        assert len(events.Scalars(tag)) == len(history)


def test_summary_rows_come_from_the_stored_epochs(sweep_dir):
    rows = {r["arm"]: r for r in load_rows(sweep_dir)}
    assert set(rows) == {"tiny", "large"}
    for arm, row in rows.items():
        _, history = arm_files(sweep_dir, arm)
        best = min(history, key=lambda r: r["val_binary_crossentropy"])
        assert row["status"] == "done"
        assert row["epochs"] == len(history)
        assert row["best_epoch"] == best["epoch"]
        assert row["binary_crossentropy_at_best"] == best["binary_crossentropy"]
        assert row["val_auc_at_best"] == best["val_auc"]
    with open(os.path.join(sweep_dir, "summary.json")) as f:
        assert [r["arm"] for r in json.load(f)["arms"]] == ["tiny", "large"]


def test_a_sweep_that_cannot_be_placed_fails_fast(ray_session, tmp_path):
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(data=sample_path(), arms=("tiny",), splits=SPLITS,
                      resources=ResourcesConfig(workers=4), storage=str(tmp_path))  # fmt: skip
    started = time.time()
    with pytest.raises(UsageError, match="needs 4 workers x 1 CPUs = 4 CPUs but the Ray cluster has 2"):
        run_sweep(cfg, log=lambda *_: None)
    assert time.time() - started < 30
    assert os.listdir(tmp_path) == []  # no run directory


def test_an_existing_run_is_never_overwritten(sweep_dir):
    from raypkg.sweep import run_sweep

    before = os.path.getmtime(os.path.join(sweep_dir, "summary.json"))
    cfg = SweepConfig(data=sample_path(), splits=SPLITS, storage=os.path.dirname(sweep_dir),
                      name=os.path.basename(sweep_dir))  # fmt: skip
    with pytest.raises(UsageError, match="already exists"):
        run_sweep(cfg, log=lambda *_: None)
    assert os.path.getmtime(os.path.join(sweep_dir, "summary.json")) == before


def test_cli_prepare_sweep_all_rows_then_summarize(tmp_path):
    """The user's path: `raypkg data prepare`, then `raypkg sweep` (its own local Ray) on the prepared
    directory with every train row streamed to 2 workers, JSON on stdout; `summarize` agrees."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cli = [sys.executable, "-m", "raypkg.cli"]
    prepared = tmp_path / "prepared"
    prep = subprocess.run([*cli, "data", "prepare", sample_path(), str(prepared), "--rows-per-shard", "2000"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    sweep = subprocess.run(
        [*cli, "sweep", "--data", str(prepared), "--n-train", "all", "--arms", "small", "--max-epochs", "2",
         "--workers", "2", "--in-memory-rows", "1000",  # 4,992 train rows per worker: streamed
         "--storage", str(tmp_path), "--name", "cli", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    rows = json.loads(sweep.stdout)
    assert [(r["arm"], r["status"], r["epochs"], r["stopped_by"]) for r in rows] == [("small", "done", 2, "max_epochs")]
    result, history = arm_files(str(tmp_path / "cli"), "small")
    assert [h["rows"] for h in history] == [9_984, 9_984]  # every row after validation; a small file has no test rows
    assert result["workers"] == 2 and result["replicas_agree"]
    summary = subprocess.run([*cli, "summarize", str(tmp_path / "cli"), "--format", "csv"],
                             capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    (row,) = csv.DictReader(summary.stdout.splitlines())
    assert float(row["min_val_binary_crossentropy"]) == rows[0]["min_val_binary_crossentropy"]
