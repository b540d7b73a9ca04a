"""The worker a new FlowRunActor's driver starts beside it (runtime.driver.warm): it runs while
every CPU is taken (it needs none), and it holds the engine's worker side once it ran, so the
run's first task finds a worker warm instead of waiting for one to start after the actor."""

from __future__ import annotations

import pathlib
import time

import pytest


@pytest.mark.timeout(120)
def test_the_warm_up_needs_no_cpu_and_imports_the_workers_side(ray_session, tmp_path):
    import ray

    from rayflow.runtime.driver.warm import start_worker

    release = tmp_path / "release"

    @ray.remote(num_cpus=1)
    def hold(path: str) -> None:
        deadline = time.time() + 90
        while not pathlib.Path(path).exists() and time.time() < deadline:
            time.sleep(0.05)

    cpus = int(ray.cluster_resources().get("CPU", 0))
    held = [hold.remote(str(release)) for _ in range(cpus)]
    try:
        node = ray.get_runtime_context().get_node_id()
        modules = ray.get(start_worker(node), timeout=30)  # every CPU held: it ran all the same
    finally:
        release.write_text("go")
        ray.get(held, timeout=60)
    assert "rayflow.engine.worker.execute" in modules and "rayflow.runtime.actor.executor" in modules
