"""Ray Train's TensorFlow backend without `import tensorflow` in the processes that only orchestrate.

`ray.train.tensorflow.TensorflowTrainer` is `DataParallelTrainer(backend_config=TensorflowConfig())`, but
importing anything from `ray.train.tensorflow` imports TensorFlow itself (its package __init__), ~5 s
on this machine, in the trial driver and again in the Train controller, both before the first worker
process starts. This backend does what TensorflowConfig's does — each worker gets a TF_CONFIG naming
every worker's address and its own index, for MultiWorkerMirroredStrategy — from a module that does
not import TensorFlow; only the Train workers do (22 s -> 14-16 s from trial start to the first
step, bench/sweep_cost.py). tests/test_units.py checks the TF_CONFIG against Ray's own.

The Train workers also start importing TensorFlow as soon as their process has joined Ray
(`preload_tensorflow`, a worker process setup hook), while Ray Train is still setting them up.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR
from ray.train.backend import Backend, BackendConfig

PRELOADED: dict[str, float] = {}  # this worker's preload: "preload" when it began, "tf" when TensorFlow was in


def worker_runtime_env() -> dict:
    """The Train workers' runtime env: `preload_tensorflow` runs as each worker process starts.

    A `worker_process_setup_hook` key is only honoured in ray.init's runtime env, where it would make
    every process (trial drivers, controllers, Ray Data tasks) import TensorFlow; Ray turns that key
    into this environment variable, which also works per actor (tests/test_ray.py checks it ran).
    """
    return {"env_vars": {
        WORKER_PROCESS_SETUP_HOOK_ENV_VAR: f"{__name__}.{preload_tensorflow.__name__}",
        "TF_USE_LEGACY_KERAS": "1",  # set before TensorFlow's import: it loads tf_keras, not Keras 3 too (-0.6 s)
    }}  # fmt: skip


def preload_tensorflow() -> None:
    """Import the training loop (TensorFlow, tf_keras: ~4.5 s here) in a background thread, overlapping
    what is left of the worker's set-up once this hook runs (its actor, train context and the loop's
    hand-off: ~1 s here); the loop's own import then waits for this one. Measured gain ~1 s per trial."""
    import importlib
    import threading

    def load() -> None:
        try:
            importlib.import_module("raypkg.train")
        except BaseException:
            return  # the loop's own import raises it again, where Ray Train reports it
        PRELOADED["tf"] = time.time()

    PRELOADED["preload"] = time.time()
    threading.Thread(target=load, daemon=True, name="raypkg-preload").start()


@dataclass
class MultiWorkerConfig(BackendConfig):
    @property
    def backend_cls(self):
        return MultiWorkerBackend


class MultiWorkerBackend(Backend):
    def on_start(self, worker_group, backend_config: MultiWorkerConfig) -> None:
        import ray

        addresses = worker_group.execute(worker_address)
        ray.get([worker_group.execute_single_async(rank, set_tf_config, addresses, rank)
                 for rank in range(len(worker_group))])  # fmt: skip


def worker_address() -> str:
    from ray._common.network_utils import build_address
    from ray.train._internal.utils import get_address_and_port

    return build_address(*get_address_and_port())


def set_tf_config(addresses: list[str], rank: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf_keras, as raypkg/keras_compat.py uses
