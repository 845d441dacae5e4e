"""Which Keras the workers train with, decided in one place.

Keras 3's `Model.fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy`: its symbolic
build reduces a PerReplica batch ("Attempt to convert a value (PerReplica...)") and its step logs are
reduced along axis 0 of scalars (keras-team/keras#20585, ray-project/ray#47464). TensorFlow ships
Keras 2 as `tf_keras` for such code; importing it by name needs no TF_USE_LEGACY_KERAS and leaves
`tf.keras` untouched. tf_keras is pinned to tensorflow's minor version in pyproject.toml.
"""


import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
