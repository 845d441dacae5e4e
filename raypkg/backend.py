"""Ray Train's TensorFlow backend without `import tensorflow` in the processes that only orchestrate.

`ray.train.tensorflow.TensorflowTrainer` is `DataParallelTrainer(backend_config=TensorflowConfig())`, but
importing anything from `ray.train.tensorflow` imports TensorFlow itself (its package __init__), ~5 s
on this machine, in the trial driver and again in the Train controller, both before the first worker
process starts. This backend does what TensorflowConfig's does — each worker gets a TF_CONFIG naming
every worker's address and its own index, for MultiWorkerMirroredStrategy — from a module that does
not import TensorFlow; only the Train workers do (22 s -> 14-16 s from trial start to the first
step, bench/sweep_cost.py). tests/test_units.py checks the TF_CONFIG against Ray's own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig


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
