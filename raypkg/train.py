"""One arm's training: the Ray Train worker loop, the only code that touches MultiWorkerMirroredStrategy.

Each worker feeds its shard (raypkg/shards.py) to Keras as a per-replica dataset (no re-sharding, no
re-batching by tf.distribute), held in memory when it is small and streamed from Ray's object store
when not, trains until patience runs out, and reports to Ray every `report_every` epochs. Rank 0
writes the per-epoch history, TensorBoard events and result.json.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time

import numpy as np
import psutil
import ray.train

from raypkg.arms import Arm, build_model
from raypkg.backend import PRELOADED
from raypkg.config import TrainConfig
from raypkg import shards
from raypkg.data import FEATURES
from raypkg.keras_compat import keras, tf
from raypkg.results import BEST_WEIGHTS_FILE, HISTORY_FILE, METRIC, RESULT_FILE, write_json

STREAM_SHUFFLE_ROWS = 100_000  # shuffle window of a streamed shard (~12 MB)


def train_loop_per_worker(config: dict) -> None:
    marks = {"process": psutil.Process().create_time(), **PRELOADED, "loop": time.time()}  # start-up stages
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    arm, tc = Arm.from_dict(config["arm"]), TrainConfig(**config["train"])
    limit_threads(config["threads"])  # before the strategy starts TF's runtime
    tf.get_logger().setLevel("ERROR")  # MWMS logs every collective at INFO
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    per_replica = tc.batch_size // world  # the global batch is split evenly, as in one-process Keras
    rows = config["shard_rows"]  # this worker's rows of each split (equal on every worker)
    mine = {split: config["shards"][f"{split}_{rank}"] for split in ("train", "validation", "test")}
    train_ds = feed(strategy, mine["train"], rows["train"], per_replica, tc, shuffle_seed=tc.seed * 7919 + rank)
    val_ds = feed(strategy, mine["validation"], rows["validation"], per_replica, tc)
    marks["data"] = time.time()

    keras.utils.set_random_seed(tc.seed)
    with strategy.scope():
        model = build_model(arm, keras, seed=tc.seed)
        compile_model(model, tc, steps_per_epoch=steps(rows["train"], per_replica), world=world)
        state = restore(model)  # the last checkpoint, after a worker failure or an interrupted sweep

    marks["model"] = time.time()
    out_dir = config["out_dir"] if rank == 0 else None
    recorder = EpochRecorder(tc, out_dir, started=config["trial_start"], marks=marks, state=state)
    callbacks = [
        Validator(val_ds, steps(rows["validation"], per_replica)),  # first: the others read its val_* logs
        Patience(tc.patience, recorder),
        recorder,  # last: it sees whether this epoch stopped training
    ]
    if config.get("rungs"):  # --scheduler asha
        callbacks.insert(-1, Halving(config["rungs"], config["trial"], config["rung_epochs"], recorder, world))
    if not recorder.finished():
        model.fit(
            train_ds,
            initial_epoch=recorder.epochs_done(),
            epochs=tc.max_epochs,
            steps_per_epoch=steps(rows["train"], per_replica),
            callbacks=callbacks,
            verbose=0,
        )
    checksum = check_replicas_agree(model, world)
    model.set_weights(recorder.best_weights)
    test = evaluate_test(model, strategy, mine["test"], rows["test"], per_replica, tc) if rows["test"] else {}
    result = recorder.result(arm, world, checksum=checksum, test=test)
    if out_dir:
        np.savez(os.path.join(out_dir, BEST_WEIGHTS_FILE), *recorder.best_weights)
        write_json(os.path.join(out_dir, RESULT_FILE), result)
    ray.train.report({**result, "epoch": result["epochs"], METRIC: recorder.rows[-1][METRIC]})  # as every report has


def restore(model) -> dict | None:
    """Load the latest checkpoint Ray Train holds for this run into `model` and its optimizer."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        with np.load(os.path.join(path, "arrays.npz")) as arrays:
            n_weights, n_opt = int(arrays["n_weights"]), int(arrays["n_optimizer"])
            weights = [arrays[f"w{i}"] for i in range(n_weights)]
            optimizer = [arrays[f"o{i}"] for i in range(n_opt)]
            best = [arrays[f"b{i}"] for i in range(n_weights)]
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
    model.set_weights(weights)
    model.optimizer.build(model.trainable_variables)
    for variable, value in zip(list(model.optimizer.variables), optimizer):
        variable.assign(value)
    return {**state, "best_weights": best}


def save_checkpoint(model, recorder: "EpochRecorder", metrics: dict, rank: int) -> None:
    """Report `metrics` with a checkpoint (weights, optimizer, best weights, history so far); rank 0 writes it."""
    import tempfile

    weights = model.get_weights()  # on every rank: reading mirrored variables is local, no collective
    optimizer = [v.numpy() for v in list(model.optimizer.variables)]
    with tempfile.TemporaryDirectory(prefix="raypkg-ckpt-") as path:
        checkpoint = None
        if rank == 0:
            arrays = {f"w{i}": w for i, w in enumerate(weights)}
            arrays.update({f"o{i}": o for i, o in enumerate(optimizer)})
            arrays.update({f"b{i}": b for i, b in enumerate(recorder.best_weights)})
            np.savez(os.path.join(path, "arrays.npz"), n_weights=len(weights), n_optimizer=len(optimizer), **arrays)
            with open(os.path.join(path, "state.json"), "w") as f:
                json.dump({"rows": recorder.rows, "starts": recorder.starts, "rungs": recorder.rungs}, f)
            checkpoint = ray.train.Checkpoint.from_directory(path)
        ray.train.report(metrics, checkpoint=checkpoint)


def evaluate_test(model, strategy, shard, rows: int, per_replica: int, tc: TrainConfig) -> dict:
    """BCE, accuracy and AUC of `model` (the best weights) on the test split, all workers' shards together."""
    test_ds = feed(strategy, shard, rows, per_replica, tc)
    metrics = model.evaluate(test_ds, steps=steps(rows, per_replica), return_dict=True, verbose=0)
    return {f"test_{k}": float(v) for k, v in metrics.items() if k in ("binary_crossentropy", "accuracy", "auc", "rows")}


def feed(strategy, shard, rows: int, per_replica: int, tc: TrainConfig, shuffle_seed: int | None = None):
    """A repeating per-replica dataset over this worker's shard, one pass per epoch: held in memory when
    it has at most `tc.in_memory_rows` rows (its blocks fetched once), else streamed from Ray's object
    store every epoch (the shard is then a Ray Dataset: `shards.streamable`)."""
    if rows <= tc.in_memory_rows:
        x, y = shards.load(shard)
        return distribute(strategy, x, y, per_replica, shuffle_seed)
    return stream(strategy, shard, per_replica, shuffle=shuffle_seed is not None)


def limit_threads(threads: int) -> None:
    """One TF thread pool sized to this worker's CPUs: W workers on W cores must not each use all cores."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def steps(rows: int, per_replica: int) -> int:
    return math.ceil(rows / per_replica)


def distribute(strategy, x, y, per_replica: int, shuffle_seed: int | None = None):
    """This worker's in-memory shard as a repeating per-replica dataset: one pass per epoch.

    Ray already sharded the rows, so tf.distribute must neither shard again (each worker would see
    half its rows) nor re-batch (a global batch of 500 would become 250 split in two).
    """
    return strategy.distribute_datasets_from_function(lambda _ctx: batches(x, y, per_replica, shuffle_seed))


def batches(x, y, batch_size: int, shuffle_seed: int | None = None):
    """Endless (features, labels) batches of the arrays, every row once per epoch of ceil(n / batch_size)
    batches, in a new random order each epoch when `shuffle_seed` is given (the same orders for the same seed).

    Each batch is gathered by index from a per-epoch permutation: tf.data's own row-by-row
    `shuffle(n).batch(b)` costs 6-10 s per 1M rows per epoch on this CPU, the gather 0.6-0.9 s.
    """
    features, labels, n = tf.constant(x), tf.constant(y), len(x)

    def epoch(number):  # number: 0, 1, 2, ... (int64)
        order = tf.range(n, dtype=tf.int64)
        if shuffle_seed is not None:
            seed = tf.stack([tf.constant(shuffle_seed, tf.int64), number])
            order = tf.random.experimental.stateless_shuffle(order, seed=seed)

        def gather(start):
            rows = order[start : start + batch_size]
            return tf.gather(features, rows), tf.gather(labels, rows)

        return tf.data.Dataset.range(0, n, batch_size).map(gather)

    return tf.data.Dataset.counter().flat_map(epoch).prefetch(2)


def stream(strategy, dataset, per_replica: int, shuffle: bool):
    """The shard streamed from Ray's object store, a pass per epoch, shuffled within a window of rows."""
    def shard_batches():
        return shards.stream(dataset, per_replica, STREAM_SHUFFLE_ROWS if shuffle else None)

    signature = (tf.TensorSpec((None, len(FEATURES)), tf.float32), tf.TensorSpec((None, 1), tf.float32))

    def per_worker(_ctx):
        return tf.data.Dataset.from_generator(shard_batches, output_signature=signature).repeat().prefetch(2)

    return strategy.distribute_datasets_from_function(per_worker)


def compile_model(model, tc: TrainConfig, steps_per_epoch: int, world: int) -> None:
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        tc.learning_rate, decay_steps=steps_per_epoch * tc.decay_epochs, decay_rate=tc.decay_rate
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.BinaryCrossentropy(from_logits=True, name="binary_crossentropy"),
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),  # logits: 0 is p=0.5
            keras.metrics.AUC(from_logits=True, name="auc"),
            row_counter(),
        ],
        # XLA has no CPU collectives ("not yet implemented for CPU devices"): one CPU worker only
        jit_compile=tc.jit_compile and (world == 1 or bool(tf.config.list_physical_devices("GPU"))),
    )


def row_counter():
    """A metric summing rows seen, all-reduced over replicas: proves each epoch is one full pass."""

    class Rows(keras.metrics.Sum):
        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(tf.cast(tf.shape(y_true)[0], self.dtype))

    return Rows(name="rows")


def check_replicas_agree(model, world: int) -> float:
    """Checksum of the weights; raises if any worker's weights differ from rank 0's (one model, not W)."""
    import ray.train.collective

    checksum = float(sum(np.abs(w).astype(np.float64).sum() for w in model.get_weights()))
    if world > 1:
        ranks0 = ray.train.collective.broadcast_from_rank_zero(checksum)
        if ranks0 != checksum:
            raise RuntimeError(f"replica weights diverged: checksum {checksum!r} != rank 0's {ranks0!r}")
    return checksum


class Validator(keras.callbacks.Callback):
    """Adds val_* metrics to each epoch's logs, from one iterator kept across epochs.

    `fit(validation_data=...)` builds a new distributed iterator every epoch, which costs ~80 ms under
    MultiWorkerMirroredStrategy: most of a Tiny epoch. The repeating dataset gives one pass per epoch.
    """

    def __init__(self, val_ds, val_steps: int):
        super().__init__()
        self.val_ds, self.val_steps, self._iterator = val_ds, val_steps, None

    def on_epoch_end(self, epoch, logs=None):
        if self._iterator is None:
            self._iterator = iter(self.val_ds)
        self.model.reset_metrics()  # fit already copied this epoch's training metrics into logs
        test_step = self.model.make_test_function()
        for _ in range(self.val_steps):
            test_step(self._iterator)
        logs.update({f"val_{k}": float(v) for k, v in self.model.get_metrics_result().items()})


class Patience(keras.callbacks.Callback):
    """Keras' EarlyStopping(patience) on val_binary_crossentropy, resumable: its best epoch comes from
    the recorded history, so a restored trial stops where an uninterrupted one would."""

    def __init__(self, patience: int, recorder: "EpochRecorder"):
        super().__init__()
        self.patience, self.recorder = patience, recorder

    def on_epoch_end(self, epoch, logs=None):
        best = self.recorder.best_row(including=logs)
        if epoch + 1 - best["epoch"] >= self.patience:
            self.model.stop_training = True


class Halving(keras.callbacks.Callback):
    """ASHA's rule at each rung epoch (raypkg/asha.py): rank 0 asks the sweep's rungs actor whether this
    trial's best val BCE so far is in the best 1/reduction_factor of the trials that reached the rung;
    every worker stops on the same epoch when it is not."""

    def __init__(self, rungs, trial: str, epochs: list[int], recorder: "EpochRecorder", world: int):
        super().__init__()
        self.rungs, self.trial, self.epochs, self.recorder, self.world = rungs, trial, set(epochs), recorder, world

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        decision = None
        if ray.train.get_context().get_world_rank() == 0:
            value = self.recorder.best_row(including=logs)[METRIC]
            decision = ray.get(self.rungs.decide.remote(self.trial, epoch + 1, value))
        if self.world > 1:
            from ray.train.collective import broadcast_from_rank_zero

            decision = broadcast_from_rank_zero(decision)
        self.recorder.rungs.append(decision)
        if not decision["continue"]:
            self.model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """Keeps the per-epoch rows and the best weights, appends rows to history.csv (rank 0), reports to
    Ray Train every `report_every` epochs and checkpoints every `checkpoint_every` (same epochs on every rank)."""

    def __init__(self, tc: TrainConfig, out_dir: str | None, started: float, marks: dict[str, float],
                 state: dict | None = None):  # fmt: skip
        super().__init__()
        self.tc, self.out_dir, self.started, self.marks = tc, out_dir, started, marks
        self.rows: list[dict] = state["rows"] if state else []
        self.starts: list[int] = [*state["starts"], len(self.rows)] if state else [0]  # epoch each attempt began at
        self.best_weights = state["best_weights"] if state else None
        self.rungs: list[dict] = state.get("rungs", []) if state else []  # ASHA's decisions at each rung reached
        self._log: ArmLog | None = None
        self.fit_started = time.time()

    def epochs_done(self) -> int:
        return len(self.rows)

    def finished(self) -> bool:
        done = self.epochs_done()
        return done >= self.tc.max_epochs or (done > 0 and done - self.best_row()["epoch"] >= self.tc.patience)

    def best_row(self, including: dict | None = None) -> dict:
        """The row with the least val BCE (the earliest on ties), counting a not yet recorded epoch's logs."""
        rows = self.rows + ([{"epoch": len(self.rows) + 1, **including}] if including else [])
        return min(rows, key=lambda r: r[METRIC])

    def on_train_begin(self, logs=None):
        self.fit_started = time.time()
        if self.best_weights is None:
            self.best_weights = self.model.get_weights()
        if self.out_dir:
            self._log = ArmLog(self.out_dir, self.rows)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["time_s"] = time.time() - self.fit_started
        if not self.rows or row[METRIC] < self.best_row()[METRIC]:
            self.best_weights = self.model.get_weights()
        self.rows.append(row)
        if self._log:
            self._log.write(row)
        last = self.model.stop_training or row["epoch"] >= self.tc.max_epochs
        metrics = {**row, "best_epoch": self.best_row()["epoch"], f"min_{METRIC}": self.best_row()[METRIC]}
        if row["epoch"] % self.tc.checkpoint_every == 0 and not last:
            save_checkpoint(self.model, self, metrics, rank=ray.train.get_context().get_world_rank())
        elif row["epoch"] % self.tc.report_every == 0 and not last:
            ray.train.report(metrics)

    def stopped_by(self) -> str:
        if self.rows[-1]["epoch"] >= self.tc.max_epochs:
            return "max_epochs"
        halted = self.rungs and not self.rungs[-1]["continue"]
        return "asha" if halted else "patience"

    def on_train_end(self, logs=None):
        if self._log:
            self._log.close()

    def result(self, arm: Arm, world: int, checksum: float, test: dict) -> dict:
        best, epochs = self.best_row(), self.rows[-1]["epoch"]
        return {
            "arm": arm.name,
            "params": arm.param_count(),
            "workers": world,
            "seed": self.tc.seed,
            "epochs": epochs,
            "best_epoch": best["epoch"],
            f"min_{METRIC}": best[METRIC],
            "binary_crossentropy_at_best": best["binary_crossentropy"],
            "val_accuracy_at_best": best["val_accuracy"],
            "val_auc_at_best": best["val_auc"],
            f"final_{METRIC}": self.rows[-1][METRIC],
            **test,  # the best weights on the test split
            "stopped_by": self.stopped_by(),
            "rungs": self.rungs,  # --scheduler asha: value, cutoff and verdict at each rung reached
            "rows_per_epoch": self.rows[-1]["rows"],
            "val_rows_per_epoch": self.rows[-1]["val_rows"],
            "attempts": self.starts,  # [0] for a trial that never restarted; [0, 40] resumed at epoch 40
            "startup_s": self.fit_started - self.started,  # trial start to first training step, of which:
            **{f"ready_{k}_s": t - self.started for k, t in self.marks.items()},  # loop entered, data in, model built
            "fit_s": time.time() - self.fit_started,
            "wall_s": time.time() - self.started,
            "weights_checksum": checksum,
            "replicas_agree": True if world > 1 else None,  # check_replicas_agree raised otherwise
        }


class ArmLog:
    """Rank 0's record of an arm: history.csv (a row per epoch) and TensorBoard events as Keras lays them out.

    Events go through tensorboardX (pure Python, <1 ms an epoch); Keras' TensorBoard callback costs
    ~60 ms an epoch in eager summary ops, more than a whole Tiny epoch.
    """

    def __init__(self, out_dir: str, rows: list[dict]):
        """Start the files afresh with `rows`, the epochs a restored checkpoint holds (later ones are re-run)."""
        from tensorboardX import SummaryWriter

        os.makedirs(out_dir, exist_ok=True)
        self._file = open(os.path.join(out_dir, HISTORY_FILE), "w", newline="")
        self._csv: csv.DictWriter | None = None
        board, purge = os.path.join(out_dir, "tensorboard"), len(rows) + 1  # drop events of epochs to re-run
        self._boards = {split: SummaryWriter(f"{board}/{split}", purge_step=purge) for split in ("train", "validation")}
        for row in rows:
            self._write_csv(row)

    def _write_csv(self, row: dict) -> None:
        if self._csv is None:
            self._csv = csv.DictWriter(self._file, fieldnames=list(row))
            self._csv.writeheader()
        self._csv.writerow(row)
        self._file.flush()  # a crash loses at most the epoch in flight

    def write(self, row: dict) -> None:
        self._write_csv(row)
        for key, value in row.items():
            if key in ("epoch", "time_s"):
                continue
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._boards[split].add_scalar(f"epoch_{name}", value, row["epoch"])

    def close(self) -> None:
        self._file.close()
        for board in self._boards.values():
            board.close()
