"""A sweep's settings from three layers: the defaults (raypkg/config.py), a study file, the command line.

A study file is TOML (see jobs/studies/): sweep settings at the top level, `[train]`, `[resources]`
and `[asha]` tables, and `[arm.<name>]` tables for arms of the study's own. Every setting has the name of its
command-line flag (with _ for -); a flag given on the command line wins over the file.

    arms = ["tiny", "large", "wide"]
    train_sizes = [1000, 10000, "all"]
    seeds = 3
    [train]
    max_epochs = 2000
    [resources]
    workers = 2
    [arm.wide]
    hidden = [1024, 1024]
    dropout = 0.3
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, fields

from raypkg.arms import make_arm
from raypkg.config import AshaConfig, ResourcesConfig, Splits, SweepConfig, TrainConfig
from raypkg.errors import UsageError

TOP = ("data", "arms", "n_validation", "train_sizes", "n_test", "seeds", "scheduler", "storage", "name")
TRAIN = tuple(f.name for f in fields(TrainConfig))
RESOURCES = tuple(f.name for f in fields(ResourcesConfig))
ASHA = tuple(f.name for f in fields(AshaConfig))
TABLES = {"train": TRAIN, "resources": RESOURCES, "asha": ASHA}


def load_study(path: str) -> dict:
    """The study file as flat settings {flag name: value}, its arms under "custom_arms"."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"study file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path} is not a readable TOML study file ({e})") from None
    settings: dict = {}
    for key, value in doc.items():
        if key in TABLES and isinstance(value, dict):
            allowed = TABLES[key]
            for sub, item in value.items():
                if sub not in allowed:
                    raise UsageError(f"{path}: unknown setting {sub!r} in [{key}]; it takes {', '.join(allowed)}")
                settings[sub] = item
        elif key == "arm" and isinstance(value, dict):  # [arm.<name>] tables
            settings["custom_arms"] = tuple(asdict(make_arm(name, spec, where=path)) for name, spec in value.items())
        elif key in TOP:
            settings[key] = value
        else:
            raise UsageError(f"{path}: unknown setting {key!r}; a study takes {', '.join(TOP)}, [train], "
                             "[resources], [asha] and [arm.<name>] tables")  # fmt: skip
    return settings


def build_config(settings: dict, where: str = "the command line") -> SweepConfig:
    """A SweepConfig from flat settings (defaults for the rest); a value of the wrong kind is a UsageError."""
    s = dict(settings)
    sizes = tuple(parse_size(v, where) for v in as_list(s.pop("train_sizes", ()), "train_sizes", where))
    n_train = Splits.n_train if not sizes else (None if None in sizes else max(sizes))
    arms = as_list(s.pop("arms", ()), "arms", where)
    custom = tuple(s.pop("custom_arms", ()))
    splits = {"n_validation": s.pop("n_validation", Splits.n_validation), "n_test": s.pop("n_test", Splits.n_test)}
    train = {k: s.pop(k) for k in TRAIN if k in s}
    resources = {k: s.pop(k) for k in RESOURCES if k in s}
    asha = {k: s.pop(k) for k in ASHA if k in s}
    for cls, values in ((Splits, splits), (TrainConfig, train), (ResourcesConfig, resources), (AshaConfig, asha),
                        (SweepConfig, s)):  # fmt: skip
        check_types(cls, values, where)
    splits = Splits(splits["n_validation"], n_train, splits["n_test"])
    return SweepConfig(arms=tuple(arms), splits=splits, train=TrainConfig(**train), resources=ResourcesConfig(**resources),
                       asha=AshaConfig(**asha), train_sizes=sizes, custom_arms=custom, **s)  # fmt: skip


def check_types(cls, values: dict, where: str) -> None:
    """Each value has its default's type (a whole number for int, any number for float)."""
    for f in fields(cls):
        if values.get(f.name) is None:
            continue
        want = KIND_OF.get(f.name, type(f.default) if isinstance(f.default, (bool, int, float, str)) else None)
        if not is_kind(values[f.name], want):
            raise UsageError(f"{where}: {f.name} must be {KINDS[want]} (got {values[f.name]!r})")


def is_kind(value, want) -> bool:
    if want is None:
        return True
    if isinstance(value, bool):
        return want is bool
    return isinstance(value, (int, float)) if want is float else isinstance(value, want)


KIND_OF = {"data": str, "storage": str, "name": str, "scheduler": str, "max_concurrent": int, "n_test": int}
KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def as_list(value, key: str, where: str) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise UsageError(f"{where}: {key} must be a list or a comma-separated string (got {value!r})")


def parse_size(value, where: str = "--train-sizes") -> int | None:
    """A training-set size: a whole number (10000, 1e4) or "all"."""
    if isinstance(value, str) and value.strip() == "all":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.5
    if not number.is_integer() or number < 1:
        raise UsageError(f"{where}: train size {value!r} must be a whole number of rows >= 1 or 'all'")
    return int(number)
