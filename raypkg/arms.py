"""The arms of the study: named model shapes, and the one function that builds them.

An arm is data, not a branch: hidden-layer widths plus its regularization. The registry holds the
seven arms of the TensorFlow "Overfit and underfit" tutorial exactly as it defines them.
"""

from __future__ import annotations

from dataclasses import dataclass

N_FEATURES = 28  # HIGGS: 21 low-level + 7 high-level features


@dataclass(frozen=True)
class Arm:
    name: str
    hidden: tuple[int, ...]  # units per hidden layer, ELU
    l2: float = 0.0  # kernel l2 penalty on each hidden layer
    dropout: float = 0.0  # Dropout rate after each hidden layer
    activation: str = "elu"

    def param_count(self, n_features: int = N_FEATURES) -> int:
        """Trainable parameters: weights + biases of each Dense layer, logits output included."""
        widths = (n_features, *self.hidden, 1)
        return sum(a * b + b for a, b in zip(widths, widths[1:]))

    def describe(self) -> str:
        """Layers and regularization in one line, e.g. `512-512-512-512 elu, l2=0.001`."""
        parts = ["-".join(map(str, self.hidden)) + f" {self.activation}"]
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
    )
}


def get_arms(names: list[str] | None) -> list[Arm]:
    """Arms by name, in the order given; all arms when `names` is empty or None."""
    from raypkg.errors import UsageError

    if not names:
        return list(ARMS.values())
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise UsageError(
            f"unknown arm {unknown[0]!r}: choose from {', '.join(ARMS)} (see `raypkg arms`)"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"arm listed twice in {','.join(names)}: name each arm once")
    return [ARMS[n] for n in names]


def build_model(arm: Arm, keras, n_features: int = N_FEATURES, seed: int | None = None):
    """The arm as an uncompiled Keras model with a single logits output (no sigmoid)."""
    reg = keras.regularizers.l2(arm.l2) if arm.l2 else None
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
