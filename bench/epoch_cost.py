"""Seconds per epoch: plain single-process Keras vs raypkg's worker path, in one process, as ratios.

    .venv/bin/python bench/epoch_cost.py [--arms tiny,large] [--epochs 20] [--threads 1]

Both train on the shipped sample's rows held in memory (9,000 train, 1,000 validation, batch 500):
- plain:  `model.fit(dataset, validation_data=...)`, no distribution strategy (the tutorial's way);
- raypkg: the functions `train_loop_per_worker` uses (MultiWorkerMirroredStrategy with one worker,
  per-replica datasets, the persistent validation iterator, XLA), minus Ray's start-up.
The median epoch after a warm-up is reported; the machine is noisy, so compare the ratio column.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_rows():
    import gzip

    import numpy as np

    from raypkg.data import sample_path

    with gzip.open(sample_path(), "rt") as f:
        a = np.array([[float(v) for v in line.split(",")] for line in f], dtype=np.float32)
    return (a[1000:10000, 1:], a[1000:10000, :1]), (a[:1000, 1:], a[:1000, :1])


def epoch_times(keras, callbacks_fit) -> list[float]:
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            stamps.append(time.perf_counter())

    callbacks_fit([Stamp()])
    return [b - a for a, b in zip(stamps, stamps[1:])][3:]  # drop tracing / warm-up epochs


def run(arm_name: str, epochs: int, strategy, train, val):
    """Median s/epoch; `strategy` None = plain Keras."""
    from raypkg import train as T
    from raypkg.arms import ARMS, build_model
    from raypkg.config import TrainConfig
    from raypkg.keras_compat import keras, tf

    (x, y), (vx, vy) = train, val
    tc = TrainConfig()
    if strategy is None:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(500).repeat()
        vds = tf.data.Dataset.from_tensor_slices((vx, vy)).batch(500)
        model = build_model(ARMS[arm_name], keras)
        T.compile_model(model, TrainConfig(jit_compile=False), steps_per_epoch=18, world=1)
        fit = lambda cbs: model.fit(ds, epochs=epochs, steps_per_epoch=18, validation_data=vds,  # noqa: E731
                                    verbose=0, callbacks=cbs)  # fmt: skip
    else:
        ds = T.distribute(strategy, x, y, 500, shuffle_seed=0)
        vds = T.distribute(strategy, vx, vy, 500)
        with strategy.scope():
            model = build_model(ARMS[arm_name], keras)
            T.compile_model(model, tc, steps_per_epoch=18, world=1)
        fit = lambda cbs: model.fit(ds, epochs=epochs, steps_per_epoch=18, verbose=0,  # noqa: E731
                                    callbacks=[T.Validator(vds, 2), *cbs])  # fmt: skip
    return statistics.median(epoch_times(keras, fit))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arms", default="tiny,large")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench/out/epoch_cost.json")
    args = p.parse_args()

    from raypkg.train import limit_threads

    from raypkg.keras_compat import tf

    limit_threads(args.threads)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op, as MWMS requires
    train, val = load_rows()
    rows = []
    for arm in args.arms.split(","):
        plain = run(arm, args.epochs, None, train, val)
        ours = run(arm, args.epochs, strategy, train, val)
        rows.append({"arm": arm, "plain_s": plain, "raypkg_s": ours, "plain_over_raypkg": plain / ours})
    print(f"{'arm':<8} {'plain s/epoch':>14} {'raypkg s/epoch':>15} {'speed vs plain':>15}")
    for r in rows:
        print(f"{r['arm']:<8} {r['plain_s']:>14.3f} {r['raypkg_s']:>15.3f} {r['plain_over_raypkg']:>14.2f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"threads": args.threads, "epochs": args.epochs, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
