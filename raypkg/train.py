"""One arm's training: the Ray Train worker loop, the only code that touches MultiWorkerMirroredStrategy.

Each worker feeds its Ray Data shard to Keras as a per-replica dataset (no re-sharding, no re-batching
by tf.distribute), held in memory when it is small and streamed from Ray's object store when not, trains until patience runs out, and reports to Ray
every `report_every` epochs. Rank 0 writes the per-epoch history, TensorBoard events and result.json.
"""

from __future__ import annotations

import csv
import math
import os
import time

import psutil
import ray.train

from raypkg.arms import Arm, build_model
from raypkg.config import TrainConfig
from raypkg.data import FEATURES, LABEL, to_arrays
from raypkg.keras_compat import keras, tf
from raypkg.results import HISTORY_FILE, METRIC, RESULT_FILE, write_json

STREAM_SHUFFLE_ROWS = 100_000  # shuffle window of a streamed shard (~12 MB)


def train_loop_per_worker(config: dict) -> None:
    marks = {"process": psutil.Process().create_time(), "loop": time.time()}  # start-up stages
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    arm, tc = Arm(**config["arm"]), TrainConfig(**config["train"])
    limit_threads(config["threads"])  # before the strategy starts TF's runtime
    tf.get_logger().setLevel("ERROR")  # MWMS logs every collective at INFO
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    per_replica = tc.batch_size // world  # the global batch is split evenly, as in one-process Keras
    rows = config["shard_rows"]  # this worker's rows of each split (equal on every worker)
    train_ds = feed(strategy, f"train_{rank}", rows["train"], per_replica, tc, shuffle_seed=tc.seed * 7919 + rank)
    val_ds = feed(strategy, f"validation_{rank}", rows["validation"], per_replica, tc)
    marks["data"] = time.time()

    keras.utils.set_random_seed(tc.seed)
    with strategy.scope():
        model = build_model(arm, keras, seed=tc.seed)
        compile_model(model, tc, steps_per_epoch=steps(rows["train"], per_replica), world=world)

    marks["model"] = time.time()
    out_dir = config["out_dir"] if rank == 0 else None
    recorder = EpochRecorder(tc, out_dir, started=config["trial_start"], marks=marks)
    callbacks = [
        Validator(val_ds, steps(rows["validation"], per_replica)),  # first: the others read its val_* logs
        keras.callbacks.EarlyStopping(monitor=METRIC, patience=tc.patience, mode="min"),
        recorder,
    ]
    model.fit(
        train_ds,
        epochs=tc.max_epochs,
        steps_per_epoch=steps(rows["train"], per_replica),
        callbacks=callbacks,
        verbose=0,
    )
    result = recorder.result(arm, world, checksum=check_replicas_agree(model, world))
    if out_dir:
        write_json(os.path.join(out_dir, RESULT_FILE), result)
    ray.train.report(result)


def feed(strategy, shard_name: str, rows: int, per_replica: int, tc: TrainConfig, shuffle_seed: int | None = None):
    """A repeating per-replica dataset over this worker's Ray Data shard, one pass per epoch: held in
    memory when it has at most `tc.in_memory_rows` rows (read once), else streamed every epoch."""
    shard = ray.train.get_dataset_shard(shard_name)
    if rows <= tc.in_memory_rows:
        x, y = to_arrays(shard.iter_batches(batch_format="numpy", batch_size=None))
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

    def per_worker(_ctx):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.batch(per_replica).repeat().prefetch(2)

    return strategy.distribute_datasets_from_function(per_worker)


def stream(strategy, shard, per_replica: int, shuffle: bool):
    """The shard streamed from Ray's object store, a pass per epoch, shuffled within a window of rows."""
    import numpy as np

    def batches():
        for b in shard.iter_batches(batch_size=per_replica, batch_format="numpy", prefetch_batches=4,
                                    local_shuffle_buffer_size=STREAM_SHUFFLE_ROWS if shuffle else None):  # fmt: skip
            yield np.column_stack([b[c] for c in FEATURES]), b[LABEL].reshape(-1, 1)

    signature = (tf.TensorSpec((None, len(FEATURES)), tf.float32), tf.TensorSpec((None, 1), tf.float32))

    def per_worker(_ctx):
        return tf.data.Dataset.from_generator(batches, output_signature=signature).repeat().prefetch(2)

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
    import numpy as np
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


class EpochRecorder(keras.callbacks.Callback):
    """Keeps the per-epoch rows, appends them to history.csv (rank 0), reports to Ray Train."""

    def __init__(self, tc: TrainConfig, out_dir: str | None, started: float, marks: dict[str, float]):
        super().__init__()
        self.tc, self.out_dir, self.started, self.marks = tc, out_dir, started, marks
        self.rows: list[dict] = []
        self._log: ArmLog | None = None
        self.fit_started = time.time()

    def on_train_begin(self, logs=None):
        self.fit_started = time.time()
        if self.out_dir:
            self._log = ArmLog(self.out_dir)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["time_s"] = time.time() - self.fit_started
        self.rows.append(row)
        if self._log:
            self._log.write(row)
        last = self.model.stop_training or row["epoch"] >= self.tc.max_epochs
        if row["epoch"] % self.tc.report_every == 0 and not last:  # same epochs on every rank
            ray.train.report({**row, **self.best()})

    def on_train_end(self, logs=None):
        if self._log:
            self._log.close()

    # -- summaries --
    def best(self) -> dict:
        best = min(self.rows, key=lambda r: r[METRIC])
        return {"best_epoch": best["epoch"], f"min_{METRIC}": best[METRIC]}

    def result(self, arm: Arm, world: int, checksum: float) -> dict:
        best = min(self.rows, key=lambda r: r[METRIC])
        epochs = self.rows[-1]["epoch"]
        return {
            "arm": arm.name,
            "params": arm.param_count(),
            "workers": world,
            "epochs": epochs,
            "best_epoch": best["epoch"],
            f"min_{METRIC}": best[METRIC],
            "binary_crossentropy_at_best": best["binary_crossentropy"],
            "val_accuracy_at_best": best["val_accuracy"],
            "val_auc_at_best": best["val_auc"],
            f"final_{METRIC}": self.rows[-1][METRIC],
            "stopped_by": "max_epochs" if epochs >= self.tc.max_epochs else "patience",
            "rows_per_epoch": self.rows[-1]["rows"],
            "val_rows_per_epoch": self.rows[-1]["val_rows"],
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

    def __init__(self, out_dir: str):
        from tensorboardX import SummaryWriter

        os.makedirs(out_dir, exist_ok=True)
        self._file = open(os.path.join(out_dir, HISTORY_FILE), "w", newline="")
        self._csv: csv.DictWriter | None = None
        board = os.path.join(out_dir, "tensorboard")
        self._boards = {"train": SummaryWriter(f"{board}/train"), "validation": SummaryWriter(f"{board}/validation")}

    def write(self, row: dict) -> None:
        if self._csv is None:
            self._csv = csv.DictWriter(self._file, fieldnames=list(row))
            self._csv.writeheader()
        self._csv.writerow(row)
        self._file.flush()  # a crash loses at most the epoch in flight
        for key, value in row.items():
            if key in ("epoch", "time_s"):
                continue
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._boards[split].add_scalar(f"epoch_{name}", value, row["epoch"])

    def close(self) -> None:
        self._file.close()
        for board in self._boards.values():
            board.close()
