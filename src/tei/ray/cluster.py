"""Joining Ray: the cluster in RAY_ADDRESS, or a local one that stays on loopback.

A local Ray on Linux advertises the machine's primary address even when told 127.0.0.1 (it maps
loopback to the "remotely reachable" IP). With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 it takes the
loopback address, as on a laptop; that must be in the environment before `import ray`, and its
processes inherit it. No dashboard, no usage stats, and a small object store: the default reserves
30% of RAM."""
from __future__ import annotations

import logging
import os

log = logging.getLogger("tei")

LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 300 * 1024 * 1024


def connect(num_cpus: int | None = None, object_store_bytes: int = OBJECT_STORE_BYTES) -> bool:
    """ray.init once per process; returns True when this call started a local Ray."""
    started = _init(num_cpus, object_store_bytes)
    log.info("Ray nodes: %s", node_addresses())
    return started


def _init(num_cpus: int | None, object_store_bytes: int) -> bool:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
        return False
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=object_store_bytes,
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        configure_logging=False,
    )
    return True


def node_addresses() -> list[str]:
    import ray

    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})


def use_assigned_cpus() -> int:
    """Ray sets OMP_NUM_THREADS=1 in actors; give torch the CPUs Ray assigned this actor instead."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
