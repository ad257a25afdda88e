"""Shared fixtures. `ray_session`: one local Ray instance for the whole test session (request it).
`one_thread`: torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once (2 CPUs, no dashboard) in a short temp dir; Unix socket paths must stay short."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions and LSTM steps: extra OpenMP threads only contend on a 2-core machine."""
    from nassearch.device import torch_threads

    with torch_threads(1):
        yield
