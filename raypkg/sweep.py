"""A sweep: a grid of arms x training-set sizes x seeds, each a Ray Tune trial of a Ray Train data-parallel
TensorFlow trainer (Train V2 pattern; see raypkg/backend.py for why not `TensorflowTrainer` itself).

Everything a user can get wrong is checked before the run directory exists, so a failed start leaves
nothing behind that could pass for a result. The data is read and split once, in the driver, and
the same per-worker shards go to every trial. A trial checkpoints every `checkpoint_every` epochs:
a dead worker is replaced and the trial continues from there (FailureConfig), and `resume` runs
the unfinished trials of an interrupted sweep again, each continuing from its own checkpoint.

Run directory (<trial> is e.g. large-n10000-s0):
    sweep.json                  settings, resolved row counts and the trials, written when the sweep starts
    arms/<trial>/history.csv    one row per epoch (rank 0)
    arms/<trial>/result.json    the trial's summary with test metrics of its best weights; present once it finished
    arms/<trial>/best_weights.npz   the best epoch's weights (np.load -> model.set_weights)
    arms/<trial>/error.txt      why a trial failed, if it did
    arms/<trial>/tensorboard/   TensorBoard events (train/, validation/)
    tables/                     epochs, trials, groups as Parquet and CSV, written when the sweep ends
    summary.json                one row per trial, written when the sweep ends
    ray/                        Ray Tune and Ray Train internals, checkpoints included
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass

from raypkg.arms import Arm, get_arms
from raypkg.asha import rung_epochs, start_rungs
from raypkg.config import SweepConfig
from raypkg.data import SplitRows, check_higgs, resolve_splits
from raypkg.prepare import read_manifest
from raypkg.errors import UsageError
from raypkg.shards import cut_shards, shard_ranges, streamable
from raypkg.results import (ERROR_FILE, RESULT_FILE, SUMMARY_FILE, SWEEP_FILE, arm_dir, error_line, load_rows,
                            write_json, write_tables)  # fmt: skip

SCHEDULERS = ("none", "asha")
TRIAL_SLOT = "raypkg_trial"  # custom resource: one per running trial's driver function, which needs no CPU
WORKER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TF's C++ INFO/WARNING lines, once per worker
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # a report waits at most this long for the controller
}
LOCAL_ENV = {  # a local instance's workers (tests/conftest.py too)
    **WORKER_ENV,
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # one machine has no node to preempt: one process less per trial
}


@dataclass(frozen=True)
class Trial:
    """One cell of the grid: an arm trained on the first `n_train` train rows from seed `seed`."""

    arm: Arm
    n_train: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm.name}-n{self.n_train}-s{self.seed}"

    def to_dict(self) -> dict:
        return {"name": self.name, "arm": asdict(self.arm), "n_train": self.n_train, "seed": self.seed}


def run_sweep(cfg: SweepConfig, address: str | None = None, log=print, resume: bool = False) -> str:
    """Train every trial of `cfg` (arms x train sizes x seeds); return the run directory.

    With `resume`, continue the sweep already in storage/name: trials with a result are kept as they
    are, the others continue from their last checkpoint (or start, if they had none).
    """
    rows = check_request(cfg)
    trials = make_trials(cfg, rows)
    run_dir = run_dir_path(cfg.storage, cfg.name, resume)
    connect(address, log)
    check_resources(cfg)
    if resume:
        check_same_data(run_dir, rows)
        for path in (SUMMARY_FILE,) + tuple(os.path.join("arms", t.name, ERROR_FILE) for t in trials):
            if os.path.exists(os.path.join(run_dir, path)):
                os.remove(os.path.join(run_dir, path))  # derived, rewritten at the end
    else:
        make_run_dir(run_dir)
        write_json(os.path.join(run_dir, SWEEP_FILE), {
            "config": cfg.to_dict(), "rows": asdict(rows), "trials": [t.to_dict() for t in trials],
            "started": time.time(),
        })  # fmt: skip
    todo = [t for t in trials if not os.path.exists(os.path.join(arm_dir(run_dir, t.name), RESULT_FILE))]
    if resume:
        log(f"resume: {len(trials) - len(todo)} of {len(trials)} trials already done, {len(todo)} to run")
    if todo:
        ranges = shard_ranges(rows, sorted({t.n_train for t in todo}), cfg.resources.workers)
        shards = streamable(cut_shards(cfg.data, ranges), ranges, cfg.train.in_memory_rows)
        log(f"data: {rows.total:,} rows; validation {rows.n_validation:,}, train {rows.n_train:,}, "
            f"test {rows.n_test:,}")  # fmt: skip
        rungs = None
        if cfg.scheduler == "asha":  # decided inside the trials, not by Tune: see raypkg/asha.py
            rungs = start_rungs(cfg.asha, cfg.train.max_epochs, run_dir, [t.name for t in trials])
            log(f"asha: trials compared at epochs {rung_epochs(cfg.asha, cfg.train.max_epochs)}")
        record_failures(run_dir, tune_trials(cfg, todo, run_dir, shards, ranges, rungs, log))
    write_tables(run_dir)
    write_json(os.path.join(run_dir, SUMMARY_FILE), {"finished": time.time(), "trials": load_rows(run_dir)})
    return run_dir


def check_same_data(run_dir: str, rows: SplitRows) -> None:
    """A resumed sweep must see the rows it started with."""
    import json

    with open(os.path.join(run_dir, SWEEP_FILE)) as f:
        stored = json.load(f)["rows"]
    if stored != asdict(rows):
        raise UsageError(f"the data's rows changed since {run_dir} started ({stored} then, {asdict(rows)} now): "
                         "resume with the same data, or start a new sweep")  # fmt: skip


def record_failures(run_dir: str, errors: dict[str, str | None]) -> None:
    """error.txt beside each trial that failed for good."""
    for name, error in errors.items():
        if error:
            os.makedirs(arm_dir(run_dir, name), exist_ok=True)
            with open(os.path.join(arm_dir(run_dir, name), ERROR_FILE), "w") as f:
                f.write(error + "\n")


def make_trials(cfg: SweepConfig, rows: SplitRows) -> list[Trial]:
    """The grid, arm-major, in the user's order: arms x train sizes x seeds."""
    arms = get_arms(list(cfg.arms), {a["name"]: Arm.from_dict(a) for a in cfg.custom_arms})
    sizes = []
    for size in cfg.train_sizes or (None,):
        n = rows.n_train if size is None else size
        if not 1 <= n <= rows.n_train:
            raise UsageError(f"--train-sizes {n:,} is not between 1 and the train split's {rows.n_train:,} rows")
        if n not in sizes:
            sizes.append(n)
    seeds = range(cfg.train.seed, cfg.train.seed + cfg.seeds)
    return [Trial(arm, n, seed) for arm in arms for n in sizes for seed in seeds]


def check_request(cfg: SweepConfig) -> SplitRows:
    """Everything that can be checked without Ray: numbers, names, the data file. Returns the splits."""
    res, tc = cfg.resources, cfg.train
    for flag, value in [("--workers", res.workers), ("--cpus-per-worker", res.cpus_per_worker),
                        ("--max-epochs", tc.max_epochs), ("--patience", tc.patience),
                        ("--batch-size", tc.batch_size), ("--report-every", tc.report_every)]:  # fmt: skip
        if value < 1:
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    if cfg.seeds < 1:
        raise UsageError(f"--seeds must be at least 1 (got {cfg.seeds})")
    if tc.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be at least 1 (got {tc.checkpoint_every})")
    if res.gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker must be 0 or more (got {res.gpus_per_worker:g})")
    if cfg.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown --scheduler {cfg.scheduler!r}: use {' or '.join(SCHEDULERS)}")
    if cfg.asha.grace_period < 1:
        raise UsageError(f"--grace-period must be at least 1 epoch (got {cfg.asha.grace_period})")
    if not cfg.asha.reduction_factor > 1:
        raise UsageError(f"--reduction-factor must be more than 1 (got {cfg.asha.reduction_factor:g})")
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


def run_dir_path(storage: str, name: str | None, resume: bool = False) -> str:
    """Absolute storage/name (Ray needs absolute paths): a new one, or with `resume` an existing sweep's."""
    name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    run_dir = os.path.abspath(os.path.join(storage, name))
    if resume and not os.path.isfile(os.path.join(run_dir, SWEEP_FILE)):
        raise UsageError(f"no sweep to resume at {run_dir}: check --storage and the name")
    if not resume and os.path.exists(run_dir):
        raise UsageError(f"run directory {run_dir} already exists: continue it with --resume {name}, "
                         "or pick another --name")  # fmt: skip
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
    if address:
        log(f"ray: connecting to the cluster at {address}")
        check_cluster(address)
        ray.init(address=address, runtime_env={"env_vars": WORKER_ENV}, log_to_driver=False, logging_level="WARNING")
    else:
        cpus = os.cpu_count() or 1
        log(f"ray: starting a local instance on this machine ({cpus} CPUs); give --address to use a cluster")
        ray.init(num_cpus=cpus, resources={TRIAL_SLOT: 1000}, include_dashboard=False,
                 runtime_env={"env_vars": LOCAL_ENV}, log_to_driver=False, logging_level="WARNING")  # fmt: skip


def check_cluster(address: str) -> None:
    """One clear line, not a minute of retries and a traceback, when the cluster at `address` (host:port)
    refuses us for want of its token or does not answer."""
    import ray.exceptions
    from ray._raylet import GcsClient  # what ray.init itself connects with

    if address in ("auto", "local") or "://" in address:
        return  # resolved by ray.init itself
    try:
        with silenced_stderr():  # the C++ client logs each failed attempt
            GcsClient(address=address, cluster_id=None)
    except ray.exceptions.AuthenticationError:
        raise UsageError(
            f"the Ray cluster at {address} wants its token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
            "RAY_AUTH_TOKEN_PATH) as cluster/README.md shows"
        ) from None
    except ray.exceptions.RpcError:
        raise UsageError(f"no Ray cluster answers at {address}: check --address / RAY_ADDRESS "
                         "(host:port of the head's GCS, 6379 by default) and the tunnel to it") from None  # fmt: skip


@contextlib.contextmanager
def silenced_stderr():
    """File descriptor 2 to /dev/null for the block: also silences C++ code."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
    gpus = res.workers * res.gpus_per_worker
    if gpus > have.get("GPU", 0):
        raise UsageError(
            f"one trial needs {res.workers} workers x {res.gpus_per_worker:g} GPUs = {gpus:g} GPUs but the "
            f"Ray cluster has {have.get('GPU', 0):g}: lower --gpus-per-worker or add GPU nodes"
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
    res, have = cfg.resources, ray.cluster_resources()
    fits = have.get("CPU", 0) // (res.workers * res.cpus_per_worker)
    if res.gpus_per_worker:
        fits = min(fits, have.get("GPU", 0) // (res.workers * res.gpus_per_worker))
    return max(1, int(fits))


def tune_trials(cfg: SweepConfig, trials: list[Trial], run_dir: str, shards: dict, ranges: dict, rungs=None,
                log=print) -> dict[str, str | None]:  # fmt: skip
    """Run one Tune trial per grid cell on the `shards` (raypkg/shards.py) of their row `ranges`
    (`rungs`: the ASHA actor, or None); return {trial name: error text or None}."""
    from ray import tune

    concurrent = min(max_concurrent(cfg), len(trials))
    res = cfg.resources
    log(f"sweep: {len(trials)} trials, {concurrent} at a time, {res.workers} worker(s) each -> {run_dir}")
    trainable = tune.with_resources(
        tune.with_parameters(train_arm, shards=shards, rungs=rungs),  # put in the object store once
        {"CPU": 0, TRIAL_SLOT: 1},  # the trial's Train workers hold the CPUs
    )
    attempt = len([d for d in os.listdir(os.path.join(run_dir, "ray")) if d.startswith("tune")]) \
        if os.path.isdir(os.path.join(run_dir, "ray")) else 0  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        param_space={
            "trial": tune.grid_search([t.to_dict() for t in longest_first(trials)]),
            "train": asdict(cfg.train),
            "resources": asdict(res),
            "shard_rows": {k: stop - start for k, (start, stop) in ranges.items() if k.endswith("_0")},
            "run_dir": run_dir,
            "rung_epochs": rung_epochs(cfg.asha, cfg.train.max_epochs) if rungs else [],
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            reuse_actors=False,  # measured no start-up gain from reusing trial processes
        ),
        run_config=tune.RunConfig(storage_path=os.path.join(run_dir, "ray"), name=f"tune-{attempt}", verbose=0),
    )
    grid = tuner.fit()
    errors = {}
    for result in grid:
        name = result.config["trial"]["name"]
        errors[name] = None if result.error is None else str(result.error).strip()
        log(f"  {name}: {'failed: ' + error_line(errors[name]) if errors[name] else 'done'}")
    return errors


def longest_first(trials: list[Trial]) -> list[Trial]:
    """Start the biggest jobs first so the short ones fill the gaps at the end (summaries keep the grid's order)."""
    return sorted(trials, key=lambda t: (-t.arm.param_count() * t.n_train, -t.arm.dropout, -t.arm.l2, t.seed))


def trial_name(trial) -> str:
    return trial.config["trial"]["name"]


def train_arm(config: dict, shards: dict, rungs=None) -> None:
    """Tune function trainable: one trial, trained by Ray Train (MultiWorkerMirroredStrategy workers) whose
    reports reach Tune.

    The trainer's name and storage are the trial's own, so running it again (a resumed sweep) makes
    Ray Train restore its latest checkpoint; FailureConfig replaces dead workers the same way.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypkg.backend import MultiWorkerConfig, worker_runtime_env

    started = time.time()
    trial, res, workers = config["trial"], config["resources"], config["resources"]["workers"]
    name, rows = trial["name"], config["shard_rows"]
    mine = {f"train_{r}": shards[f"train_n{trial['n_train']}_{r}"] for r in range(workers)}
    mine.update({f"{s}_{r}": shards[f"{s}_{r}"] for s in ("validation", "test") for r in range(workers)})
    trainer = DataParallelTrainer(  # = TensorflowTrainer, without importing TensorFlow here (raypkg/backend.py)
        train_worker,
        backend_config=MultiWorkerConfig(),
        train_loop_config={
            "arm": trial["arm"],
            "train": {**config["train"], "seed": trial["seed"]},
            "threads": res["cpus_per_worker"],
            "shard_rows": {"train": rows[f"train_n{trial['n_train']}_0"], "validation": rows["validation_0"],
                           "test": rows["test_0"]},  # fmt: skip
            "out_dir": arm_dir(config["run_dir"], name),
            "trial_start": started,
            "trial": name,
            "rungs": rungs,  # the sweep's ASHA actor, None without --scheduler asha
            "rung_epochs": config["rung_epochs"],
            "shards": mine,  # worker r reads *_r: object refs of its blocks (raypkg/shards.py)
        },
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=res["gpus_per_worker"] > 0,
            resources_per_worker={"CPU": res["cpus_per_worker"], "GPU": res["gpus_per_worker"]},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=os.path.join(config["run_dir"], "ray", "train"),
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=config["train"]["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest; it also holds the best weights
            worker_runtime_env=worker_runtime_env(),  # TensorFlow's import starts with the worker process
        ),
    )
    trainer.fit()
    note_trial_end(arm_dir(config["run_dir"], name), started)


def train_worker(config: dict) -> None:
    """raypkg.train's loop, imported in the Train worker only: TensorFlow's import stays out of the trial
    driver and the Train controller, which unpickle this function (raypkg/backend.py)."""
    from raypkg.train import train_loop_per_worker

    train_loop_per_worker(config)


def note_trial_end(out_dir: str, started: float) -> None:
    """Add the trial's whole wall time to its result.json, and the part after the worker's result: shutting
    down the worker group and the trainer (the fixed cost at a trial's end)."""
    import json

    path = os.path.join(out_dir, RESULT_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        result = json.load(f)
    trial_s = time.time() - started
    write_json(path, {**result, "trial_s": trial_s, "teardown_s": trial_s - result["wall_s"]})
