"""Run a command where a wrong address cannot leave the machine: in a network namespace that has
only loopback (`unshare --net`, then `ip link set lo up`). That needs root; elsewhere the command
runs as it is, and the code under test still pins 127.0.0.1 itself."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

ENV = {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@functools.lru_cache(maxsize=1)
def available() -> bool:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


def isolated(cmd: list[str]) -> list[str]:
    if not available():
        return cmd
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]


def env(**extra: str) -> dict:
    return {**os.environ, **ENV, **extra}
