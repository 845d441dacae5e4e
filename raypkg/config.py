"""Every default of a sweep, defined once. Variants override one field (dataclasses.replace)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

UCI_TEST_ROWS = 500_000  # the last 500,000 rows of HIGGS.csv.gz are UCI's test set


@dataclass(frozen=True)
class Splits:
    """Row ranges of the file, in file order: validation first, train next, test last."""

    n_validation: int = 1_000
    n_train: int | None = 10_000  # None: every row between validation and test (--n-train all)
    n_test: int | None = None  # None: UCI's 500,000 when the file has room, else the rows after train


@dataclass(frozen=True)
class TrainConfig:
    """The tutorial's optimizer, schedule and stopping rule."""

    batch_size: int = 500  # global: each of W workers takes batch_size / W rows per step
    learning_rate: float = 0.001
    decay_epochs: int = 1_000  # InverseTimeDecay decay_steps = steps_per_epoch * decay_epochs
    decay_rate: float = 1.0
    max_epochs: int = 10_000
    patience: int = 200  # epochs without a new minimum of val_binary_crossentropy
    seed: int = 0  # initial weights and shuffling
    jit_compile: bool = True  # XLA-compiled train step: ~1.3x faster Large epochs on CPU
    report_every: int = 10  # epochs per report to Ray Tune; each report may wait ~2 s for Ray Train
    checkpoint_every: int = 50  # epochs between checkpoints: a restarted trial loses at most this many
    max_failures: int = 2  # times a trial's Train workers are replaced after one dies (Ray Train FailureConfig)
    in_memory_rows: int = 2_000_000  # a worker's shard up to this size (~230 MB) is held in memory; larger streams


@dataclass(frozen=True)
class ResourcesConfig:
    workers: int = 1  # Train workers per trial (MultiWorkerMirroredStrategy replicas)
    cpus_per_worker: int = 1
    max_concurrent: int | None = None  # None: as many trials as the CPUs (or GPUs) hold
    gpus_per_worker: float = 0.0  # > 0: the workers train on GPUs


@dataclass(frozen=True)
class AshaConfig:
    """`--scheduler asha`: trials are compared at epochs grace_period * reduction_factor**k (raypkg/asha.py)."""

    grace_period: int = 100  # epochs before the first comparison; the tutorial's Large is past its val minimum by ~30
    reduction_factor: float = 3.0  # a trial continues at a rung if in the best 1/reduction_factor so far


@dataclass(frozen=True)
class SweepConfig:
    data: str
    arms: tuple[str, ...] = ()  # empty: every registered arm
    splits: Splits = field(default_factory=Splits)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage: str = "./raypkg_results"
    name: str | None = None  # None: sweep-YYYYmmdd-HHMMSS
    train_sizes: tuple[int | None, ...] = ()  # grid: train on the first n train rows; () = the whole train split
    seeds: int = 1  # grid: seeds train.seed, train.seed + 1, ...
    scheduler: str = "none"  # "asha": successive halving across trials, besides each trial's patience
    asha: AshaConfig = field(default_factory=AshaConfig)
    custom_arms: tuple[dict, ...] = ()  # a study's own arms, as Arm fields

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        """The inverse of to_dict (sweep.json holds it): nested dataclasses and tuples rebuilt."""
        return cls(**{
            **d,
            "arms": tuple(d["arms"]),
            "splits": Splits(**d["splits"]),
            "train": TrainConfig(**d["train"]),
            "resources": ResourcesConfig(**d["resources"]),
            "asha": AshaConfig(**d.get("asha", {})),
            "train_sizes": tuple(d.get("train_sizes", ())),
            "custom_arms": tuple(d.get("custom_arms", ())),
        })  # fmt: skip
