"""Several JAX processes on the loopback address, joined by `jax.distributed` into one system.

The launching side (`Processes`, `run`) starts `python -m <module>` once per process with
`DEVICES // n` host devices each, so that every run sees the same 8 devices however many
processes hold them; the worker side (`initialize`) reads its place from the environment and
joins. Nothing listens or connects on any address but 127.0.0.1, and every wait is bounded.

`python -m tests.multiprocess` (in each process) sums across all devices again and again,
printing each step, until a peer is gone or a minute has passed.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 8
# The processes of the default run; `JAXCE_PROCESSES=4 pytest tests/test_multiprocess.py`
# runs the same checks across 4 (any divisor of DEVICES).
PROCESSES = int(os.environ.get("JAXCE_PROCESSES", "2"))
RESULTS = "RESULTS "  # starts the line of a worker's JSON results
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback address that nothing held a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Processes(contextlib.AbstractContextManager):
    """`python -m module *args` in `n` processes of one JAX system, output to files in
    `folder`; leaving the `with` block kills whichever still run."""

    def __init__(self, module: str, n: int, folder: Path, *args: str, heartbeat_s: int = 30):
        assert DEVICES % n == 0, f"{n} processes cannot share {DEVICES} devices"
        # Coverage's tracing (`make test`) adds about a quarter to such a worker's time (the
        # 8-device sharding checks: 48 s alone, 61 s traced), for lines those checks reach.
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}
        env.update(
            JAX_PLATFORMS="cpu",
            JAX_COORDINATOR_ADDRESS=f"{LOOPBACK}:{free_port()}",
            JAXCE_NUM_PROCESSES=str(n),
            JAXCE_HEARTBEAT_S=str(heartbeat_s),
            # Values and partitioned programs, not speed: LLVM's optimisation would be a
            # third or more of the compile time; under pytest, the suite's other settings too.
            XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"
            f" --xla_force_host_platform_device_count={DEVICES // n}".strip(),
        )
        self.logs = [folder / f"process{i}.log" for i in range(n)]
        self.procs: list[subprocess.Popen] = []
        try:
            for i, log in enumerate(self.logs):
                with open(log, "w") as out:
                    self.procs.append(
                        subprocess.Popen(
                            [sys.executable, "-u", "-m", module, *args],
                            cwd=ROOT,
                            env=dict(env, JAXCE_PROCESS_ID=str(i)),
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)

    def output(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def report(self) -> str:
        """Every process's exit status and the end of its output."""
        parts = []
        for i, p in enumerate(self.procs):
            status = "still running" if p.poll() is None else f"exit status {p.returncode}"
            parts.append(f"--- process {i}: {status} ---\n{self.output(i)[-6000:]}")
        return "\n".join(parts)

    def wait(self, timeout: float, grace: float = 20.0) -> list[int | None]:
        """Waits until every process has ended, or until `timeout` seconds have passed, or
        `grace` seconds after one failed; each one's exit status (None: still running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [p.poll() for p in self.procs]
            if None not in codes:
                break
            if any(codes):
                deadline = min(deadline, time.monotonic() + grace)
            time.sleep(0.05)
        return [p.poll() for p in self.procs]


def run(module: str, folder: Path, n: int = PROCESSES, timeout: float = 120.0) -> list[dict]:
    """Runs `module` in `n` processes and returns each one's results: the JSON object on its
    line that starts with `RESULTS`. Fails with every process's output when one fails or
    the whole outlasts `timeout` seconds."""
    with Processes(module, n, folder) as procs:
        start = time.monotonic()
        codes = procs.wait(timeout)
        elapsed = time.monotonic() - start
        if codes != [0] * n:
            raise AssertionError(f"after {elapsed:.1f} s:\n{procs.report()}")
        results = []
        for i in range(n):
            lines = [s for s in procs.output(i).splitlines() if s.startswith(RESULTS)]
            assert lines, f"process {i} printed no results:\n{procs.report()}"
            results.append(json.loads(lines[-1][len(RESULTS) :]))
        return results


def initialize() -> None:
    """Joins this process to the system that `Processes` started (call before any other
    use of JAX): gloo for the collectives across processes, and bounds on every wait."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = os.environ["JAX_COORDINATOR_ADDRESS"]
    jax.distributed.initialize(
        coordinator_address=address,
        coordinator_bind_address=address,  # JAX would listen on every interface
        num_processes=int(os.environ["JAXCE_NUM_PROCESSES"]),
        process_id=int(os.environ["JAXCE_PROCESS_ID"]),
        initialization_timeout=60,
        heartbeat_timeout_seconds=int(os.environ["JAXCE_HEARTBEAT_S"]),
        shutdown_timeout_seconds=30,
    )
    assert jax.device_count() == DEVICES, jax.devices()


def report(results: dict) -> None:
    """Prints a worker's results, the line `run` reads."""
    print(RESULTS + json.dumps(results), flush=True)


def hold(seconds: float = 60.0) -> None:
    """Sums an array split over every device, again and again, for `seconds`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    mesh = jax.make_mesh((DEVICES,), ("all",))
    ones = jax.device_put(np.ones(DEVICES, np.float32), jax.NamedSharding(mesh, jax.P("all")))
    total = jax.jit(jnp.sum)
    deadline, step = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        print(f"step {step}: {float(total(ones))}", flush=True)
        step += 1
        time.sleep(0.1)


if __name__ == "__main__":
    initialize()
    hold()
