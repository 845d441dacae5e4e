"""The real pipeline on a real local Ray: Ray Data splits, 2-worker TensorflowTrainer trials, Tune.

Small data (the shipped sample's real rows), few epochs; nothing about Ray or TensorFlow is mocked.
"""

import csv
import dataclasses
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import pytest

from raypkg.config import ResourcesConfig, Splits, SweepConfig, TrainConfig
from raypkg.data import resolve_splits, sample_path
from raypkg.errors import UsageError
from raypkg.results import format_rows, load_rows, read_history

SPLITS = Splits(n_validation=500, n_train=2_000, n_test=500)
PATIENCE, MAX_EPOCHS = 3, 60
GRID = ["tiny-n2000-s0", "tiny-n2000-s1", "large-n2000-s0", "large-n2000-s1"]
QUIET = {"log": lambda *_: None}


def file_rows() -> np.ndarray:
    """The sample as a (rows, 29) float32 array, parsed without pyarrow or Ray."""
    with gzip.open(sample_path(), "rt") as f:
        return np.array([[float(v) for v in line.split(",")] for line in f], dtype=np.float32)


def as_array(blocks: list) -> np.ndarray:
    """A shard's rows as the file has them: label, then the features."""
    from raypkg.shards import load

    x, y = load(blocks)
    return np.column_stack([y, x])


@pytest.fixture(scope="module")
def sweep_dir(ray_session, tmp_path_factory):
    """A grid of two arms x two seeds, one worker per trial, two trials at a time; Large overfits and stops early."""
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(
        data=sample_path(),
        arms=("tiny", "large"),
        splits=SPLITS,
        seeds=2,
        train=TrainConfig(max_epochs=MAX_EPOCHS, patience=PATIENCE, report_every=5, checkpoint_every=5),
        storage=str(tmp_path_factory.mktemp("results")),
        name="grid",
    )
    return run_sweep(cfg, **QUIET)


def trial_files(run_dir: str, trial: str) -> tuple[dict, list[dict]]:
    with open(os.path.join(run_dir, "arms", trial, "result.json")) as f:
        result = json.load(f)
    return result, read_history(os.path.join(run_dir, "arms", trial, "history.csv"))


def test_splits_are_the_files_row_ranges(ray_session):
    from raypkg.shards import cut_shards, shard_ranges

    rows = resolve_splits(SPLITS, 10_984)
    shards = cut_shards(sample_path(), shard_ranges(rows, [2_000], workers=1))
    expected = file_rows()
    np.testing.assert_array_equal(as_array(shards["validation_0"]), expected[:500])
    np.testing.assert_array_equal(as_array(shards["train_n2000_0"]), expected[500:2_500])
    np.testing.assert_array_equal(as_array(shards["test_0"]), expected[-500:])


@pytest.mark.parametrize("splits", [SPLITS, Splits(300, 1_234, 777)])  # on file boundaries, and off them
def test_prepared_splits_are_the_raw_files_splits(ray_session, tmp_path, splits):
    from raypkg.prepare import PrepareConfig, prepare
    from raypkg.shards import cut_shards, shard_ranges

    prepared = str(tmp_path / "prepared")
    prepare(sample_path(), prepared, PrepareConfig(n_validation=500, n_test=500, rows_per_shard=700),
            log=lambda *_: None)  # fmt: skip
    rows = resolve_splits(splits, 10_984)
    v, t = splits.n_validation, splits.n_train
    shards = cut_shards(prepared, shard_ranges(rows, [100, t], workers=1))
    expected = file_rows()
    np.testing.assert_array_equal(as_array(shards["validation_0"]), expected[:v])
    np.testing.assert_array_equal(as_array(shards[f"train_n{t}_0"]), expected[v : v + t])
    np.testing.assert_array_equal(as_array(shards["train_n100_0"]), expected[v : v + 100])
    np.testing.assert_array_equal(as_array(shards["test_0"]), expected[-splits.n_test :])


def test_worker_shards_partition_the_train_rows_in_order(ray_session):
    from raypkg.shards import cut_shards, shard_ranges

    rows = resolve_splits(SPLITS, 10_984)
    shards = cut_shards(sample_path(), shard_ranges(rows, [1_000, 2_000], workers=2))
    assert sorted(shards) == ["test_0", "test_1", "train_n1000_0", "train_n1000_1", "train_n2000_0", "train_n2000_1",
                              "validation_0", "validation_1"]  # fmt: skip
    expected = file_rows()
    for size in (1_000, 2_000):  # each size: the first rows of the train split, half on each worker
        together = np.concatenate([as_array(shards[f"train_n{size}_0"]), as_array(shards[f"train_n{size}_1"])])
        np.testing.assert_array_equal(together, expected[500 : 500 + size])
    assert len(as_array(shards["validation_0"])) == len(as_array(shards["validation_1"])) == 250


def test_the_grid_is_arms_times_seeds_with_named_trials(sweep_dir):
    assert sorted(os.listdir(os.path.join(sweep_dir, "arms"))) == sorted(GRID)
    for trial in GRID:
        result, history = trial_files(sweep_dir, trial)
        assert (result["arm"], result["seed"], result["attempts"]) == (trial.split("-")[0], int(trial[-1]), [0])
        assert all(epoch["rows"] == SPLITS.n_train for epoch in history)  # one pass over the size's rows
        assert result["ready_preload_s"] < result["ready_tf_s"] <= result["ready_loop_s"]  # the worker's setup hook ran


def test_two_seeds_give_different_curves(sweep_dir):
    for arm in ("tiny", "large"):
        (r0, h0), (r1, h1) = trial_files(sweep_dir, f"{arm}-n2000-s0"), trial_files(sweep_dir, f"{arm}-n2000-s1")
        assert h0[0]["val_binary_crossentropy"] != h1[0]["val_binary_crossentropy"]
        assert r0["weights_checksum"] != r1["weights_checksum"]


def test_early_stopping_cuts_the_large_arm_short(sweep_dir):
    result, history = trial_files(sweep_dir, "large-n2000-s0")
    assert result["stopped_by"] == "patience"
    assert result["epochs"] < MAX_EPOCHS
    assert result["epochs"] == result["best_epoch"] + PATIENCE
    assert [int(r["epoch"]) for r in history] == list(range(1, result["epochs"] + 1))
    best = min(history, key=lambda r: r["val_binary_crossentropy"])
    assert result["min_val_binary_crossentropy"] == pytest.approx(best["val_binary_crossentropy"])


def test_metrics_are_sane(sweep_dir):
    for trial in GRID:
        result, history = trial_files(sweep_dir, trial)
        for epoch in history:
            for name in ("accuracy", "val_accuracy", "auc", "val_auc"):
                assert 0.0 <= epoch[name] <= 1.0
            # the loss adds nothing to BCE for unregularized arms
            assert epoch["loss"] == pytest.approx(epoch["binary_crossentropy"], rel=1e-4)
        assert history[-1]["val_auc"] > 0.6  # real HIGGS rows are learnable
        assert result["test_rows"] == SPLITS.n_test and 0.6 < result["test_auc"] < 1


def test_best_weights_file_scores_the_recorded_test_metrics(sweep_dir):
    """best_weights.npz, loaded into a fresh model in this process, gives result.json's test BCE."""
    from raypkg.arms import ARMS, build_model
    from raypkg.keras_compat import keras

    result, _ = trial_files(sweep_dir, "large-n2000-s0")
    model = build_model(ARMS["large"], keras)
    with np.load(os.path.join(sweep_dir, "arms", "large-n2000-s0", "best_weights.npz")) as f:
        model.set_weights([f[k] for k in f.files])
    test = file_rows()[-SPLITS.n_test :]
    bce = keras.losses.BinaryCrossentropy(from_logits=True)(test[:, :1], model(test[:, 1:], training=False))
    assert float(bce) == pytest.approx(result["test_binary_crossentropy"], rel=1e-4)


def test_tensorboard_events_hold_every_epoch(sweep_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, history = trial_files(sweep_dir, "tiny-n2000-s0")
    for split, tag in (("train", "epoch_binary_crossentropy"), ("validation", "epoch_binary_crossentropy")):
        events = EventAccumulator(os.path.join(sweep_dir, "arms", "tiny-n2000-s0", "tensorboard", split))
        events.Reload()
        assert len(events.Scalars(tag)) == len(history)


def test_summary_rows_come_from_the_stored_epochs(sweep_dir):
    rows = {r["trial"]: r for r in load_rows(sweep_dir)}
    assert list(rows) == GRID  # the grid's order: arms as given, then seeds
    for trial, row in rows.items():
        result, history = trial_files(sweep_dir, trial)
        best = min(history, key=lambda r: r["val_binary_crossentropy"])
        assert row["status"] == "done"
        assert row["epochs"] == len(history)
        assert row["best_epoch"] == best["epoch"]
        assert row["binary_crossentropy_at_best"] == best["binary_crossentropy"]
        assert row["val_auc_at_best"] == best["val_auc"]
        assert row["test_auc"] == result["test_auc"]
    with open(os.path.join(sweep_dir, "summary.json")) as f:
        assert [r["trial"] for r in json.load(f)["trials"]] == GRID


def test_summarize_groups_seeds_by_arm_and_size(sweep_dir):
    from raypkg.results import format_rows

    trials = load_rows(sweep_dir)
    groups = json.loads(format_rows(trials, "json", by="group"))
    assert [(g["arm"], g["n_train"], g["seeds"]) for g in groups] == [("tiny", 2_000, 2), ("large", 2_000, 2)]
    for group in groups:
        values = [t["min_val_binary_crossentropy"] for t in trials if t["arm"] == group["arm"]]
        assert group["min_val_binary_crossentropy_mean"] == pytest.approx(np.mean(values))
        assert group["min_val_binary_crossentropy_sd"] == pytest.approx(np.std(values, ddof=1))


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
    with pytest.raises(UsageError, match="already exists: continue it with --resume grid"):
        run_sweep(cfg, log=lambda *_: None)
    assert os.path.getmtime(os.path.join(sweep_dir, "summary.json")) == before


def test_cli_prepare_sweep_sizes_then_summarize(tmp_path):
    """The user's path: `raypkg data prepare`, then `raypkg sweep` (its own local Ray) on the prepared
    directory over two training-set sizes, every train row streamed to 2 workers in the larger;
    JSON on stdout; `summarize` agrees."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cli = [sys.executable, "-m", "raypkg.cli"]
    prepared = tmp_path / "prepared"
    prep = subprocess.run([*cli, "data", "prepare", sample_path(), str(prepared), "--rows-per-shard", "2000"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    sweep = subprocess.run(
        [*cli, "sweep", "--data", str(prepared), "--train-sizes", "1000,all", "--arms", "small", "--max-epochs", "2",
         "--workers", "2", "--in-memory-rows", "1000",  # 4,992 train rows per worker in the larger size: streamed
         "--storage", str(tmp_path), "--name", "cli", "--format", "json", "--by", "trial"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    rows = json.loads(sweep.stdout)
    assert [(r["trial"], r["status"], r["epochs"], r["stopped_by"]) for r in rows] == [
        ("small-n1000-s0", "done", 2, "max_epochs"), ("small-n9984-s0", "done", 2, "max_epochs")]  # fmt: skip
    for trial, n in (("small-n1000-s0", 1_000), ("small-n9984-s0", 9_984)):  # all: every row after validation
        result, history = trial_files(str(tmp_path / "cli"), trial)
        assert [h["rows"] for h in history] == [n, n]
        assert result["workers"] == 2 and result["replicas_agree"]
        assert "test_auc" not in result  # a small file's prepared split has no test rows
    summary = subprocess.run([*cli, "summarize", str(tmp_path / "cli"), "--format", "csv", "--by", "trial"],
                             capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    stored = list(csv.DictReader(summary.stdout.splitlines()))
    assert [float(r["min_val_binary_crossentropy"]) for r in stored] == [r["min_val_binary_crossentropy"] for r in rows]

    figure = subprocess.run([*cli, "plot", str(tmp_path / "cli"), "--group", "sizes", "--out", str(tmp_path / "sizes.png")],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert figure.returncode == 0 and open(tmp_path / "sizes.png", "rb").read(4) == b"\x89PNG", figure.stderr
    from raypkg.plots import sizes_figure

    bce, auc = sizes_figure(str(tmp_path / "cli")).axes
    assert bce.get_xscale() == "log" and "training rows" in bce.get_xlabel() and bce.get_ylabel() == "min validation BCE"
    (errorbar,) = bce.containers  # one arm: its min val BCE at 1,000 and at 9,984 rows
    line = errorbar.lines[0]
    assert list(line.get_xdata()) == [1_000, 9_984]
    assert list(line.get_ydata()) == [r["min_val_binary_crossentropy"] for r in rows]
    assert not auc.containers and "no test rows" in auc.texts[0].get_text()  # the prepared sample has no test split


# --- fault tolerance --------------------------------------------------------------------------


def train_worker_pids() -> list[int]:
    """Ray Train worker processes of this test session's Ray (descendants of this process, whose
    ray.init started the raylet), not of any other Ray on the machine."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:  # ended meanwhile
            pass
    return found


def test_a_killed_train_worker_is_replaced_and_the_trial_resumes(ray_session, tmp_path):
    """Kill one of a trial's two Train workers mid-run: Ray Train replaces the group, which continues
    from the last checkpoint (not epoch 0), and the trial ends with every epoch once in its history."""
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(data=sample_path(), arms=("small",), splits=SPLITS, storage=str(tmp_path), name="kill",
                      train=TrainConfig(max_epochs=40, patience=1_000, report_every=2, checkpoint_every=4),
                      resources=ResourcesConfig(workers=2))  # fmt: skip
    history = tmp_path / "kill" / "arms" / "small-n2000-s0" / "history.csv"
    killed = []

    def kill_a_worker_at_epoch_12():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if history.exists() and len(read_history(str(history))) >= 12 and train_worker_pids():
                pid = train_worker_pids()[-1]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_at_epoch_12, daemon=True)
    killer.start()
    run_sweep(cfg, **QUIET)
    killer.join()
    assert killed, "no Train worker to kill was found"
    result, epochs = trial_files(str(tmp_path / "kill"), "small-n2000-s0")
    first, restart = result["attempts"]
    assert first == 0 and 4 <= restart <= 40 and restart % 4 == 0  # resumed at a checkpoint, not restarted
    assert result["epochs"] == 40 and [int(e["epoch"]) for e in epochs] == list(range(1, 41))
    assert all(e["rows"] == SPLITS.n_train for e in epochs) and result["replicas_agree"]


def test_a_killed_sweep_resumes_without_retraining_finished_trials(sweep_dir, tmp_path):
    """Kill `raypkg sweep` (and its local Ray) once one trial is done and the next is past a checkpoint;
    `raypkg sweep --resume` finishes the second from its checkpoint and leaves the first untouched.
    Its tiny trial starts like the grid's tiny-n2000-s0: the same seed gives the same first epoch."""
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must fit
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp}
    cli = [sys.executable, "-m", "raypkg.cli", "sweep", "--storage", str(tmp_path)]
    run = tmp_path / "resume" / "arms"
    first = subprocess.Popen(
        [*cli, "--name", "resume", "--arms", "tiny,small", "--n-validation", "500", "--n-train", "2000",
         "--n-test", "500", "--max-epochs", "100", "--patience", "1000", "--report-every", "2",
         "--checkpoint-every", "10", "--max-concurrent", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:  # small (more parameters) runs first, then tiny
        deadline = time.time() + 400
        while time.time() < deadline and first.poll() is None:
            tiny = run / "tiny-n2000-s0" / "history.csv"
            if (run / "small-n2000-s0" / "result.json").exists() and tiny.exists() and len(read_history(str(tiny))) >= 25:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the sweep ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        small_before = {f: (run / "small-n2000-s0" / f).read_bytes() for f in ("result.json", "history.csv")}
        assert not (run / "tiny-n2000-s0" / "result.json").exists()

        resumed = subprocess.run([*cli, "--resume", "resume", "--format", "json", "--by", "trial"],
                                 env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert [(r["trial"], r["status"]) for r in json.loads(resumed.stdout)] == [
            ("tiny-n2000-s0", "done"), ("small-n2000-s0", "done")]  # fmt: skip
        assert {f: (run / "small-n2000-s0" / f).read_bytes() for f in small_before} == small_before
        result, epochs = trial_files(str(tmp_path / "resume"), "tiny-n2000-s0")
        assert result["attempts"][0] == 0 and result["attempts"][1] >= 10  # continued from a checkpoint
        assert result["epochs"] == 100 and [int(e["epoch"]) for e in epochs] == list(range(1, 101))
        _, grid = trial_files(sweep_dir, "tiny-n2000-s0")
        keys = ("loss", "binary_crossentropy", "accuracy", "auc", "val_binary_crossentropy", "val_accuracy", "val_auc")
        assert {k: epochs[0][k] for k in keys} == {k: grid[0][k] for k in keys}
    finally:
        for proc in psutil.process_iter(["cmdline"]):  # the killed sweep's Ray: whatever outlived its group
            if ray_tmp in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_trial_that_fails_for_good_does_not_stop_the_others(ray_session, tmp_path):
    """With no retries left (max_failures 0), killing one trial's worker fails that trial alone: the
    other finishes, and the summary shows the failed one with its error."""
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(data=sample_path(), arms=("tiny", "small"), splits=SPLITS, storage=str(tmp_path), name="fail",
                      train=TrainConfig(max_epochs=40, patience=1_000, report_every=2, max_failures=0))  # fmt: skip
    from raypkg.plots import curves_figure

    arms = tmp_path / "fail" / "arms"
    killed, during = [], []

    def kill_one_worker_once_both_train():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            histories = [arms / f"{a}-n2000-s0" / "history.csv" for a in ("tiny", "small")]
            if all(h.exists() and len(read_history(str(h))) >= 4 for h in histories) and train_worker_pids():
                during.append(load_rows(str(tmp_path / "fail")))  # a sweep still running summarizes and plots
                during.append(curves_figure(str(tmp_path / "fail"), group="all"))
                pid = train_worker_pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_worker_once_both_train, daemon=True)
    killer.start()
    run_dir = run_sweep(cfg, **QUIET)
    killer.join()
    assert killed, "no Train worker to kill was found"
    rows = load_rows(run_dir)
    assert sorted(r["status"] for r in rows) == ["done", "failed"]
    (done,) = [r for r in rows if r["status"] == "done"]
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert done["epochs"] == 40 and done["stopped_by"] == "max_epochs"
    assert failed["error"] and (arms / failed["trial"] / "error.txt").exists()
    assert not (arms / failed["trial"] / "result.json").exists()
    rows_then, figure_then = during
    assert [r["status"] for r in rows_then] == ["running", "running"] and all(r["epochs"] >= 4 for r in rows_then)
    assert len(figure_then.axes[0].get_lines()) == 4  # train and validation of both trials so far
    groups = {g["arm"]: g for g in json.loads(format_rows(rows, "json", by="group"))}
    assert groups[failed["arm"]]["status"] == "failed" and groups[done["arm"]]["seeds"] == 1


def test_a_sweep_asking_for_gpus_the_cluster_lacks_fails_fast(ray_session, tmp_path):
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(data=sample_path(), arms=("tiny",), splits=SPLITS, storage=str(tmp_path),
                      resources=ResourcesConfig(gpus_per_worker=1))  # fmt: skip
    with pytest.raises(UsageError, match="needs 1 workers x 1 GPUs = 1 GPUs but the Ray cluster has 0"):
        run_sweep(cfg, **QUIET)
    assert os.listdir(tmp_path) == []


# --- results people read (built from the real grid sweep) -------------------------------------


def test_tables_on_disk_are_the_trials_and_their_epochs(sweep_dir):
    import pyarrow.parquet as pq

    epochs = pq.read_table(os.path.join(sweep_dir, "tables", "epochs.parquet")).to_pylist()
    trials = pq.read_table(os.path.join(sweep_dir, "tables", "trials.parquet")).to_pylist()
    assert [t["trial"] for t in trials] == GRID
    for trial in GRID:
        result, history = trial_files(sweep_dir, trial)
        mine = [e for e in epochs if e["trial"] == trial]
        assert [e["epoch"] for e in mine] == [int(h["epoch"]) for h in history]
        assert [e["val_binary_crossentropy"] for e in mine] == [h["val_binary_crossentropy"] for h in history]
        (row,) = [t for t in trials if t["trial"] == trial]
        assert (row["arm"], row["seed"], row["test_auc"]) == (result["arm"], result["seed"], result["test_auc"])
    with open(os.path.join(sweep_dir, "tables", "epochs.csv")) as f:
        assert len(list(csv.DictReader(f))) == len(epochs)


def test_summarize_json_round_trips_to_the_stored_epochs(sweep_dir):
    """Every number of `summarize --format json --by trial` is one of the per-epoch rows it came from."""
    import pyarrow.parquet as pq

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "raypkg.cli", "summarize", sweep_dir, "--format", "json", "--by", "trial"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    epochs = pq.read_table(os.path.join(sweep_dir, "tables", "epochs.parquet")).to_pylist()
    for row in json.loads(proc.stdout):
        mine = [e for e in epochs if e["trial"] == row["trial"]]
        (best,) = [e for e in mine if e["epoch"] == row["best_epoch"]]
        assert row["epochs"] == mine[-1]["epoch"] == len(mine)
        assert row["min_val_binary_crossentropy"] == best["val_binary_crossentropy"] == min(
            e["val_binary_crossentropy"] for e in mine)  # fmt: skip
        assert row["binary_crossentropy_at_best"] == best["binary_crossentropy"]
        assert row["val_accuracy_at_best"] == best["val_accuracy"]
        assert row["val_auc_at_best"] == best["val_auc"]
        assert row["final_val_binary_crossentropy"] == mine[-1]["val_binary_crossentropy"]


def test_learning_curves_figure(sweep_dir, tmp_path):
    from raypkg.plots import curves_figure, plot_curves

    fig = curves_figure(sweep_dir, group="size")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and "epoch" in ax.get_xlabel() and ax.get_ylabel() == "binary crossentropy"
    assert ax.get_ylim() == (0.5, 0.7)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tiny", "large", "train", "validation"]
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--", "-", "--"]  # train, val per arm
    assert len(ax.collections) == 4  # a min-max band over the two seeds for each line
    tiny_val = ax.get_lines()[1].get_ydata()
    _, h0 = trial_files(sweep_dir, "tiny-n2000-s0")
    _, h1 = trial_files(sweep_dir, "tiny-n2000-s1")
    assert tiny_val[0] == pytest.approx((h0[0]["val_binary_crossentropy"] + h1[0]["val_binary_crossentropy"]) / 2)
    out = plot_curves(sweep_dir, str(tmp_path / "curves.png"), group="regularizer")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(out) > 20_000


def test_compare_two_arms_over_seeds(sweep_dir):
    from raypkg.compare import compare

    rows = compare(sweep_dir, "tiny", "large")
    assert [(r["n_train"], r["measure"]) for r in rows] == [(2_000, "min val BCE"), (2_000, "test AUC")]
    for row in rows:
        assert (row["seeds_a"], row["seeds_b"]) == (2, 2)
        assert row["ci_low"] <= row["difference"] <= row["ci_high"]
        assert row["verdict"] in ("tiny better", "large better", "no significant difference")
    with pytest.raises(UsageError, match="unknown arm 'huge' in compare"):
        compare(sweep_dir, "tiny", "huge")


def test_report_page(sweep_dir, tmp_path):
    from raypkg.report import write_report

    md = write_report(sweep_dir, str(tmp_path / "report"))
    text = open(md).read()
    for part in ("## Summary", "min val BCE", "## Figures", "## Settings", "## Reproduce", "## Versions",
                 "raypkg sweep --data", "--arms tiny,large", "--seeds 2", "ray 2.60.0", "tensorflow 2.21.0"):  # fmt: skip
        assert part in text, part
    for name in ("curves_size.png", "curves_regularizer.png"):
        assert f"]({name})" in text and (tmp_path / "report" / name).exists()
    assert "<img src=\"curves_size.png\"" in (tmp_path / "report" / "report.html").read_text()


def test_asha_stops_the_trials_behind_at_a_rung(ray_session, tmp_path):
    """--scheduler asha with 2-worker trials one at a time: Large goes first and passes every rung, an arm
    crippled by l2=10 is behind it at the first rung and stops there; every verdict is Tune's rule
    applied to the values the earlier trials recorded, and the sweep ends (no trial is killed from outside)."""
    from raypkg.arms import Arm
    from raypkg.config import AshaConfig
    from raypkg.sweep import run_sweep

    starved = Arm("starved", hidden=(16,), l2=10.0)
    cfg = SweepConfig(data=sample_path(), arms=("large", "starved", "tiny"), splits=SPLITS, storage=str(tmp_path),
                      name="asha", scheduler="asha", asha=AshaConfig(grace_period=4, reduction_factor=2),
                      custom_arms=(dataclasses.asdict(starved),),
                      resources=ResourcesConfig(workers=2, max_concurrent=1),
                      train=TrainConfig(max_epochs=12, patience=1_000, report_every=2))  # fmt: skip
    run_dir = run_sweep(cfg, **QUIET)
    results = {name: trial_files(run_dir, f"{name}-n2000-s0") for name in ("large", "starved", "tiny")}

    large, _ = results["large"]  # first at every rung: nobody to compare with
    assert (large["stopped_by"], large["epochs"]) == ("max_epochs", 12)
    assert [(r["epoch"], r["cutoff"], r["continue"]) for r in large["rungs"]] == [(4, None, True), (8, None, True)]
    starved_result, _ = results["starved"]
    assert (starved_result["stopped_by"], starved_result["epochs"]) == ("asha", 4)
    assert starved_result["test_rows"] > 0  # a halted trial still finishes: best weights scored on test

    recorded: dict[int, list[float]] = {4: [], 8: []}
    for name in ("large", "starved", "tiny"):  # the order they ran in (longest first)
        result, history = results[name]
        for rung in result["rungs"]:
            best = min(row["val_binary_crossentropy"] for row in history[: rung["epoch"]])
            assert rung["value"] == pytest.approx(best)
            rivals = recorded[rung["epoch"]]
            cutoff = float(np.percentile(rivals, 50)) if rivals else None
            assert rung["cutoff"] == (pytest.approx(cutoff) if rivals else None)
            assert rung["continue"] == (cutoff is None or best <= cutoff)
            rivals.append(best)
        last = result["rungs"][-1]
        assert result["stopped_by"] == ("max_epochs" if last["continue"] else "asha")
        assert result["epochs"] == len(history) == (12 if last["continue"] else last["epoch"])
    assert [r["stopped_by"] for r in load_rows(run_dir)][1] == "asha"

    from raypkg.asha import start_rungs  # what a resumed sweep starts with: the rungs the histories went past

    rungs = start_rungs(cfg.asha, 12, run_dir, [f"{a}-n2000-s0" for a in ("large", "starved", "tiny")])
    assert ray_session.get(rungs.decide.remote("large-n2000-s0", 8, 9.9))["continue"]  # passed before: stands
    newcomer = ray_session.get(rungs.decide.remote("newcomer", 4, 9.9))
    past_four = 1 + (results["tiny"][0]["epochs"] > 4)  # large and maybe tiny; starved stopped at 4 itself
    assert (newcomer["rivals"], newcomer["continue"]) == (past_four, False)
