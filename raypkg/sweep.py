"""A sweep: one Ray Tune trial per arm, each trial a Ray Train `TensorflowTrainer` (Train V2 pattern).

Everything a user can get wrong is checked before the run directory exists, so a failed start leaves
nothing behind that could pass for a result. The data is read and split once, in the driver, and
the same Ray Datasets go to every trial.

Run directory:
    sweep.json              settings and resolved row counts, written when the sweep starts
    arms/<arm>/history.csv  one row per epoch (rank 0)
    arms/<arm>/result.json  the arm's summary; present only once the arm has finished
    arms/<arm>/error.txt    why an arm failed, if it did
    arms/<arm>/tensorboard/ TensorBoard events (train/, validation/)
    summary.json            one row per arm, written when the sweep ends
    ray/                    Ray Tune and Ray Train internals
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

from raypkg.arms import Arm, get_arms
from raypkg.config import SweepConfig
from raypkg.data import SplitRows, check_higgs, read_higgs, resolve_splits, split_higgs
from raypkg.prepare import read_manifest, read_prepared
from raypkg.errors import UsageError
from raypkg.results import ERROR_FILE, SUMMARY_FILE, SWEEP_FILE, arm_dir, error_line, load_rows, write_json

TRIAL_SLOT = "raypkg_trial"  # custom resource: one per running trial's driver function, which needs no CPU
WORKER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TF's C++ INFO/WARNING lines, once per worker
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # a report waits at most this long for the controller
}


def run_sweep(cfg: SweepConfig, address: str | None = None, log=print) -> str:
    """Train every arm of `cfg`; return the run directory."""
    arms = get_arms(list(cfg.arms))
    rows = check_request(cfg)
    run_dir = run_dir_path(cfg.storage, cfg.name)
    connect(address, log)
    check_resources(cfg)
    make_run_dir(run_dir)
    write_json(os.path.join(run_dir, SWEEP_FILE), {
        "config": cfg.to_dict(), "rows": asdict(rows), "arms": [asdict(a) for a in arms],
        "started": time.time(),
    })  # fmt: skip
    val, train, _test = read_splits(cfg.data, rows)
    log(f"data: {rows.total:,} rows; validation {rows.n_validation:,}, train {rows.n_train:,}, "
        f"test {rows.n_test:,}")  # fmt: skip
    for arm, error in tune_arms(cfg, arms, run_dir, train, val, log).items():
        if error:
            os.makedirs(arm_dir(run_dir, arm), exist_ok=True)
            with open(os.path.join(arm_dir(run_dir, arm), ERROR_FILE), "w") as f:
                f.write(error + "\n")
    write_json(os.path.join(run_dir, SUMMARY_FILE), {"finished": time.time(), "arms": load_rows(run_dir)})
    return run_dir


def check_request(cfg: SweepConfig) -> SplitRows:
    """Everything that can be checked without Ray: numbers, names, the data file. Returns the splits."""
    res, tc = cfg.resources, cfg.train
    for flag, value in [("--workers", res.workers), ("--cpus-per-worker", res.cpus_per_worker),
                        ("--max-epochs", tc.max_epochs), ("--patience", tc.patience),
                        ("--batch-size", tc.batch_size), ("--report-every", tc.report_every)]:  # fmt: skip
        if value < 1:
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    if tc.in_memory_rows < 0:
        raise UsageError(f"--in-memory-rows must be 0 (always stream) or more (got {tc.in_memory_rows})")
    if tc.batch_size % res.workers:
        raise UsageError(
            f"--batch-size {tc.batch_size} does not split evenly over --workers {res.workers}: "
            "choose a worker count that divides it"
        )
    if cfg.name is not None and (not cfg.name or "/" in cfg.name or cfg.name.startswith(".")):
        raise UsageError(f"--name {cfg.name!r} must be a plain directory name")
    total = read_manifest(cfg.data)["rows"] if os.path.isdir(cfg.data) else check_higgs(cfg.data)
    return resolve_splits(cfg.splits, total, source=cfg.data)


def read_splits(data: str, rows: SplitRows) -> tuple:
    """(validation, train, test) Ray Datasets, read once for the whole sweep: the same rows either way,
    from a prepared directory (only the files of each split, in parallel) or a raw file (one pass)."""
    if os.path.isdir(data):
        return read_prepared(data, rows)
    return split_higgs(read_higgs(data), rows)


def run_dir_path(storage: str, name: str | None) -> str:
    """Absolute storage/name (Ray needs absolute paths), refused if it exists: results are never overwritten."""
    name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    run_dir = os.path.abspath(os.path.join(storage, name))
    if os.path.exists(run_dir):
        raise UsageError(f"run directory {run_dir} already exists: pick another --name")
    return run_dir


def make_run_dir(run_dir: str) -> None:
    try:
        os.makedirs(os.path.join(run_dir, "arms"))
    except OSError as e:
        raise UsageError(f"cannot create {run_dir} ({e.strerror}): pick a writable --storage") from None


def connect(address: str | None, log=print) -> None:
    """Join the Ray cluster at `address` / RAY_ADDRESS, or start a local one on this machine."""
    import logging

    import ray

    if ray.is_initialized():
        return
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray Data and Tune narrate every step at INFO
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": WORKER_ENV}
    if address:
        log(f"ray: connecting to the cluster at {address}")
        ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="WARNING")
    else:
        cpus = os.cpu_count() or 1
        log(f"ray: starting a local instance on this machine ({cpus} CPUs); give --address to use a cluster")
        ray.init(num_cpus=cpus, resources={TRIAL_SLOT: 1000}, include_dashboard=False,
                 runtime_env=env, log_to_driver=False, logging_level="WARNING")  # fmt: skip


def check_resources(cfg: SweepConfig) -> None:
    """Fail now if one trial's workers can never be placed: Ray Train would retry forever."""
    import ray

    have = ray.cluster_resources()
    res = cfg.resources
    need = res.workers * res.cpus_per_worker
    if need > have.get("CPU", 0):
        raise UsageError(
            f"one trial needs {res.workers} workers x {res.cpus_per_worker} CPUs = {need} CPUs but the "
            f"Ray cluster has {have.get('CPU', 0):g}: lower --workers or --cpus-per-worker"
        )
    if not have.get(TRIAL_SLOT):
        raise UsageError(
            f"the Ray cluster has no {TRIAL_SLOT!r} resource for trial drivers: start its head with "
            f"`ray start --head --resources='{{\"{TRIAL_SLOT}\": 1000}}'`"
        )


def max_concurrent(cfg: SweepConfig) -> int:
    import ray

    if cfg.resources.max_concurrent:
        return cfg.resources.max_concurrent
    per_trial = cfg.resources.workers * cfg.resources.cpus_per_worker
    return max(1, int(ray.cluster_resources().get("CPU", 0) // per_trial))


def tune_arms(cfg: SweepConfig, arms: list[Arm], run_dir: str, train, val, log=print) -> dict[str, str | None]:
    """Run one Tune trial per arm; return {arm: error text or None}."""
    from ray import tune

    concurrent = min(max_concurrent(cfg), len(arms))
    log(f"sweep: {len(arms)} arms, {concurrent} at a time, {cfg.resources.workers} worker(s) each -> {run_dir}")
    shards = shard_datasets(train, val, cfg.resources.workers)
    trainable = tune.with_resources(
        tune.with_parameters(train_arm, datasets=shards),
        {"CPU": 0, TRIAL_SLOT: 1},  # the trial's Train workers hold the CPUs
    )
    tuner = tune.Tuner(
        trainable,
        param_space={
            "arm": tune.grid_search([asdict(a) for a in longest_first(arms)]),
            "train": asdict(cfg.train),
            "resources": asdict(cfg.resources),
            "shard_rows": {split: shards[f"{split}_0"].count() for split in ("train", "validation")},
            "run_dir": run_dir,
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            reuse_actors=True,  # keep trial driver processes (TF imported); no start-up gain measured yet
        ),
        run_config=tune.RunConfig(storage_path=os.path.join(run_dir, "ray"), name="tune", verbose=0),
    )
    grid = tuner.fit()
    errors = {}
    for result in grid:
        name = result.config["arm"]["name"]
        errors[name] = None if result.error is None else str(result.error).strip()
        log(f"  {name}: {'failed: ' + error_line(errors[name]) if errors[name] else 'done'}")
    return errors


def longest_first(arms: list[Arm]) -> list[Arm]:
    """Start the biggest models first so the short ones fill the gaps at the end (the summary keeps the user's order)."""
    return sorted(arms, key=lambda a: (-a.param_count(), -a.dropout, -a.l2))


def trial_name(trial) -> str:
    return trial.config["arm"]["name"]


def shard_datasets(train, val, workers: int) -> dict:
    """{"train_<rank>": ..., "validation_<rank>": ...}: equal, contiguous shards cut once per sweep and
    kept in Ray's object store, where every trial's workers read them (nothing is re-read per trial).

    Cut here rather than by Ray Train's per-trial streaming split, which starts a coordinator actor
    per dataset per trial (~3 s each on 2 cores). Equal shards give every worker the same number of
    steps; up to workers-1 rows of each split are left out when it does not divide evenly.
    """
    shards = {}
    for split, ds in (("train", train), ("validation", val)):
        parts = ds.split(workers, equal=True) if workers > 1 else [ds.materialize()]  # split() materializes
        shards.update({f"{split}_{rank}": part for rank, part in enumerate(parts)})
    return shards


def train_arm(config: dict, datasets: dict) -> None:
    """Tune function trainable: one arm, trained by a TensorflowTrainer whose reports reach Tune."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypkg.train import train_loop_per_worker

    started = time.time()
    arm, res = config["arm"], config["resources"]
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={
            "arm": arm,
            "train": config["train"],
            "threads": res["cpus_per_worker"],
            "shard_rows": config["shard_rows"],
            "out_dir": arm_dir(config["run_dir"], arm["name"]),
            "trial_start": started,
        },
        scaling_config=ScalingConfig(num_workers=res["workers"], resources_per_worker={"CPU": res["cpus_per_worker"]}),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),  # already sharded: worker r reads *_r
        run_config=RunConfig(
            name=arm["name"],
            storage_path=os.path.join(config["run_dir"], "ray", "train"),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()

