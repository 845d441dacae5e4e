"""Where a sweep's time goes, against plain Keras measured in this same run (the machine is noisy).

    .venv/bin/python bench/sweep_cost.py [--epochs 20] [--sweep-epochs 5] [--parts step,fixed,overhead]
                                         [--out bench/out/sweep_cost.json]

On the shipped sample (1,000 validation rows, 9,000 train rows, batch 500, one thread per worker):
1. training step: samples/s of the Large arm trained by `raypkg sweep` with 1 worker and with 2,
   from history.csv's epoch times (the first 3 epochs, tracing and compiling, left out), vs plain
   `model.fit` on the same rows as NumPy arrays in this process with one TF thread;
2. fixed cost per trial: seconds from a trial's start to its first training step (with the stages the
   worker records), and from its last epoch to the trial's end, over three Tiny trials one at a time;
3. sweep overhead: the tutorial's seven arms for --sweep-epochs epochs through `raypkg sweep` (two
   trials at a time on two cores, as it schedules them) vs the same seven `model.fit` calls one after
   another in a plain script (TensorFlow's default threads).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARMUP = 3  # epochs left out of per-epoch figures: tracing, XLA compilation


def sample_rows():
    import gzip

    import numpy as np

    from raypkg.data import sample_path

    with gzip.open(sample_path(), "rt") as f:
        a = np.array([[float(v) for v in line.split(",")] for line in f], dtype=np.float32)
    return (a[1000:10000, 1:], a[1000:10000, :1]), (a[:1000, 1:], a[:1000, :1])


def plain_fit(arm: str, epochs: int, rows) -> list[float]:
    """Epoch seconds of the tutorial's own way: model.fit(x, y, validation_data=...), no strategy."""
    from raypkg.arms import ARMS, build_model
    from raypkg.config import TrainConfig
    from raypkg.keras_compat import keras
    from raypkg.train import compile_model

    (x, y), (vx, vy) = rows
    stamps = []
    stamp = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: stamps.append(time.perf_counter()))
    model = build_model(ARMS[arm], keras, seed=0)
    compile_model(model, TrainConfig(jit_compile=False), steps_per_epoch=len(x) // 500, world=1)
    start = time.perf_counter()
    model.fit(x, y, batch_size=500, epochs=epochs, validation_data=(vx, vy), verbose=0, callbacks=[stamp])
    return [b - a for a, b in zip([start, *stamps], stamps)]


def sweep(storage: str, name: str, arms: tuple, epochs: int, workers: int = 1, seeds: int = 1,
          max_concurrent: int | None = None) -> tuple[str, float]:  # fmt: skip
    from raypkg.config import ResourcesConfig, Splits, SweepConfig, TrainConfig
    from raypkg.data import sample_path
    from raypkg.sweep import run_sweep

    cfg = SweepConfig(data=sample_path(), arms=arms, splits=Splits(1_000, 9_000, 984), seeds=seeds,
                      train=TrainConfig(max_epochs=epochs, patience=epochs, report_every=10),
                      resources=ResourcesConfig(workers=workers, max_concurrent=max_concurrent),
                      storage=storage, name=name)  # fmt: skip
    start = time.perf_counter()
    run_dir = run_sweep(cfg, log=lambda *a: None)
    return run_dir, time.perf_counter() - start


def epoch_seconds(run_dir: str, trial: str) -> list[float]:
    from raypkg.results import read_history

    times = [row["time_s"] for row in read_history(os.path.join(run_dir, "arms", trial, "history.csv"))]
    return [b - a for a, b in zip([0.0, *times], times)]


def result(run_dir: str, trial: str) -> dict:
    with open(os.path.join(run_dir, "arms", trial, "result.json")) as f:
        return json.load(f)


def steady(seconds: list[float]) -> float:
    return statistics.median(seconds[WARMUP:])


def measure(args) -> dict:
    import ray

    from raypkg.keras_compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # as each Train worker (--cpus-per-worker 1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows, storage = sample_rows(), tempfile.mkdtemp(prefix="raypkg-bench-sweep-")
    out = {"machine": {"cpus": os.cpu_count()}, "epochs": args.epochs, "sweep_epochs": args.sweep_epochs}

    if "step" in args.parts:
        plain = steady(plain_fit("large", args.epochs, rows))
        one, _ = sweep(storage, "large-1w", ("large",), args.epochs, workers=1)
        two, _ = sweep(storage, "large-2w", ("large",), args.epochs, workers=2)
        s1, s2 = steady(epoch_seconds(one, "large-n9000-s0")), steady(epoch_seconds(two, "large-n9000-s0"))
        out["training_step"] = {
            "arm": "large", "rows_per_epoch": 9_000,
            "plain_samples_per_s": round(9_000 / plain), "raypkg_1w_samples_per_s": round(9_000 / s1),
            "raypkg_2w_samples_per_s": round(9_000 / s2),
            "raypkg_1w_vs_plain": round(plain / s1, 2), "raypkg_2w_vs_1w": round(s1 / s2, 2),
        }  # fmt: skip

    if "fixed" in args.parts:
        tiny, _ = sweep(storage, "tiny-3", ("tiny",), 5, seeds=3, max_concurrent=1)
        stages = [result(tiny, f"tiny-n9000-s{s}") for s in range(3)]
        med = lambda key: round(statistics.median(r[key] for r in stages), 2)  # noqa: E731
        out["fixed_cost_per_trial"] = {
            "trials": 3, "startup_s": med("startup_s"), "worker_process_s": med("ready_process_s"),
            "tf_imported_s": med("ready_tf_s"), "worker_loop_s": med("ready_loop_s"),
            "data_in_s": med("ready_data_s"), "model_built_s": med("ready_model_s"),
            "teardown_s": med("teardown_s"), "trial_s": med("trial_s"),
        }  # fmt: skip

    if "overhead" in args.parts:
        from raypkg.arms import TUTORIAL

        script_s = plain_script_seconds(args.sweep_epochs)
        _, sweep_s = sweep(storage, "tutorial", TUTORIAL, args.sweep_epochs)
        out["sweep_overhead"] = {
            "arms": len(TUTORIAL), "epochs": args.sweep_epochs, "plain_script_s": round(script_s, 1),
            "raypkg_sweep_s": round(sweep_s, 1), "raypkg_vs_plain": round(script_s / sweep_s, 2),
        }  # fmt: skip
    ray.shutdown()
    return out


def plain_script_seconds(epochs: int) -> float:
    """The seven fits one after another in a fresh process with TensorFlow's default threads (all cores),
    timed from the first fit's start (the import of TensorFlow left out, as Ray's start-up is)."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, "--plain-script", str(epochs)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def run_plain_script(epochs: int) -> None:
    from raypkg.arms import TUTORIAL

    rows = sample_rows()
    start = time.perf_counter()
    for arm in TUTORIAL:
        plain_fit(arm, epochs, rows)
    print(time.perf_counter() - start)


def print_table(out: dict) -> None:
    if t := out.get("training_step"):
        print(f"1. training step, Large, {out['epochs']} epochs of 9,000 rows (median epoch after {WARMUP}):")
        print(f"   plain model.fit      {t['plain_samples_per_s']:>8,} samples/s   1.00")
        print(f"   raypkg, 1 worker     {t['raypkg_1w_samples_per_s']:>8,} samples/s   {t['raypkg_1w_vs_plain']:.2f}x plain")
        print(f"   raypkg, 2 workers    {t['raypkg_2w_samples_per_s']:>8,} samples/s   {t['raypkg_2w_vs_1w']:.2f}x 1 worker")
    if f := out.get("fixed_cost_per_trial"):
        print(f"2. fixed cost per trial (median of {f['trials']} Tiny trials, one at a time), seconds after trial start:")
        print(f"   worker process exists {f['worker_process_s']:>5.1f}   TensorFlow imported {f['tf_imported_s']:>5.1f}"
              f"   train loop entered {f['worker_loop_s']:>5.1f}   data in {f['data_in_s']:>5.1f}"
              f"   first step {f['startup_s']:>5.1f}")  # fmt: skip
        print(f"   last epoch -> trial end {f['teardown_s']:>5.1f}   whole trial {f['trial_s']:>6.1f}")
    if s := out.get("sweep_overhead"):
        print(f"3. sweep overhead, the tutorial's {s['arms']} arms x {s['epochs']} epochs:")
        print(f"   plain script {s['plain_script_s']:>7.1f} s   raypkg sweep {s['raypkg_sweep_s']:>7.1f} s"
              f"   raypkg {s['raypkg_vs_plain']:.2f}x the plain script's speed")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the Large training-step runs")
    parser.add_argument("--sweep-epochs", type=int, default=5, help="epochs per arm in the sweep-overhead run")
    parser.add_argument("--parts", default="step,fixed,overhead", help="which of the three to measure")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "sweep_cost.json"))
    parser.add_argument("--plain-script", type=int, help=argparse.SUPPRESS)  # internal: the plain baseline of 3.
    args = parser.parse_args()
    if args.plain_script:
        return run_plain_script(args.plain_script)
    out = measure(args)
    print_table(out)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
