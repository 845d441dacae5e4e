"""The arms of the study: named model shapes, and the one function that builds them.

An arm is data, not a branch: hidden-layer widths plus its regularization. The registry holds the
seven arms of the TensorFlow "Overfit and underfit" tutorial exactly as it defines them (the
default), and the l1 variants its text names; a study file may add its own (`make_arm`).
"""

from __future__ import annotations

from dataclasses import dataclass

N_FEATURES = 28  # HIGGS: 21 low-level + 7 high-level features


ACTIVATIONS = ("elu", "relu", "selu", "gelu", "tanh", "sigmoid", "swish", "softplus", "softsign", "linear")
ARM_KEYS = ("hidden", "layers", "units", "activation", "l1", "l2", "dropout")  # what a study file may set


@dataclass(frozen=True)
class Arm:
    name: str
    hidden: tuple[int, ...]  # units per hidden layer
    l2: float = 0.0  # kernel l2 penalty on each hidden layer
    dropout: float = 0.0  # Dropout rate after each hidden layer
    activation: str = "elu"
    l1: float = 0.0  # kernel l1 penalty on each hidden layer

    @classmethod
    def from_dict(cls, d: dict) -> Arm:
        """The inverse of dataclasses.asdict, after a JSON round trip (lists back to tuples)."""
        return cls(**{**d, "hidden": tuple(d["hidden"])})

    def regularizer(self, keras):
        """The tutorial's own calls: l2(x), l1(x), or l1_l2(l1=, l2=) when both are set."""
        if self.l1 and self.l2:
            return keras.regularizers.l1_l2(l1=self.l1, l2=self.l2)
        if self.l1:
            return keras.regularizers.l1(self.l1)
        return keras.regularizers.l2(self.l2) if self.l2 else None

    def param_count(self, n_features: int = N_FEATURES) -> int:
        """Trainable parameters: weights + biases of each Dense layer, logits output included."""
        widths = (n_features, *self.hidden, 1)
        return sum(a * b + b for a, b in zip(widths, widths[1:]))

    def describe(self) -> str:
        """Layers and regularization in one line, e.g. `512-512-512-512 elu, l2=0.001`."""
        parts = ["-".join(map(str, self.hidden)) + f" {self.activation}"]
        if self.l1:
            parts.append(f"l1={self.l1:g}")
        if self.l2:
            parts.append(f"l2={self.l2:g}")
        if self.dropout:
            parts.append(f"dropout={self.dropout:g}")
        return ", ".join(parts)


LARGE = (512, 512, 512, 512)

ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("tiny", (16,)),
        Arm("small", (16, 16)),
        Arm("medium", (64, 64, 64)),
        Arm("large", LARGE),
        Arm("l2", LARGE, l2=0.001),
        Arm("dropout", LARGE, dropout=0.5),
        Arm("combined", LARGE, l2=0.0001, dropout=0.5),
        Arm("l1", LARGE, l1=0.001),
        Arm("l1_l2", LARGE, l1=0.001, l2=0.001),
    )
}
TUTORIAL = ("tiny", "small", "medium", "large", "l2", "dropout", "combined")  # the default arms


def make_arm(name: str, spec: dict, where: str = "the study file") -> Arm:
    """A user-defined arm from a study file's table: `hidden = [256, 256]` (or `layers` x `units`),
    optional activation, l1, l2, dropout. Raises a UsageError naming the bad key."""
    from raypkg.errors import UsageError

    def bad(what: str) -> UsageError:
        return UsageError(f"{where}, arm {name!r}: {what}")

    unknown = sorted(set(spec) - set(ARM_KEYS))
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}; an arm takes {', '.join(ARM_KEYS)}")
    if "hidden" in spec:
        hidden = spec["hidden"]
    elif "layers" in spec and "units" in spec:
        hidden = [spec["units"]] * spec["layers"] if isinstance(spec["layers"], int) else None
    else:
        raise bad("give `hidden = [units, ...]` or both `layers` and `units`")
    if not isinstance(hidden, list) or not hidden or not all(isinstance(u, int) and u > 0 for u in hidden):
        raise bad("hidden layers must be a non-empty list of positive whole numbers of units")
    if spec.get("activation", "elu") not in ACTIVATIONS:
        raise bad(f"activation {spec['activation']!r} is not one of {', '.join(ACTIVATIONS)}")
    for key in ("l1", "l2"):
        if not isinstance(spec.get(key, 0.0), (int, float)) or spec.get(key, 0.0) < 0:
            raise bad(f"{key} must be a number >= 0")
    dropout = spec.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise bad("dropout must be a number in [0, 1)")
    return Arm(name, tuple(hidden), l2=float(spec.get("l2", 0.0)), dropout=float(dropout),
               activation=spec.get("activation", "elu"), l1=float(spec.get("l1", 0.0)))  # fmt: skip


def get_arms(names: list[str] | None, extra: dict[str, Arm] | None = None) -> list[Arm]:
    """Arms by name, in the order given, from the registry and `extra` (a study's own arms);
    the tutorial's seven when `names` is empty or None."""
    from raypkg.errors import UsageError

    known = {**ARMS, **(extra or {})}
    if not names:
        return [known[n] for n in TUTORIAL]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown arm {unknown[0]!r}: choose from {', '.join(known)} (see `raypkg arms`)"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"arm listed twice in {','.join(names)}: name each arm once")
    return [known[n] for n in names]


def build_model(arm: Arm, keras, n_features: int = N_FEATURES, seed: int | None = None):
    """The arm as an uncompiled Keras model with a single logits output (no sigmoid)."""
    reg = arm.regularizer(keras)
    layers = [keras.Input(shape=(n_features,))]
    for i, units in enumerate(arm.hidden):
        init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
        layers.append(
            keras.layers.Dense(units, activation=arm.activation, kernel_regularizer=reg,
                               kernel_initializer=init)
        )
        if arm.dropout:
            layers.append(keras.layers.Dropout(arm.dropout))
    init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + len(arm.hidden))
    layers.append(keras.layers.Dense(1, kernel_initializer=init))
    return keras.Sequential(layers, name=arm.name)
