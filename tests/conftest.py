"""One real local Ray for the whole test session (2 CPUs, as the machine has)."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    import ray

    from raypkg.sweep import LOCAL_ENV, TRIAL_SLOT

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        num_cpus=2,
        resources={TRIAL_SLOT: 100},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": LOCAL_ENV},
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    yield ray
    ray.shutdown()
