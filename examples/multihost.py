"""The LM-head example trained data-parallel across processes, its fused head vocabulary-split.

The model and corpus are those of `examples/lm_head.py`. The devices of all
processes form a ("data", "vocab") mesh: each process reads its own rows of
every global batch (`jax.make_array_from_process_local_data`), and the head's
kernel is split over the devices of each process along the vocabulary, so
`jaxce.linear_softmax_cross_entropy` never gathers the kernel, the hidden
states or the logits: between processes go the gradients' all-reduce over
"data", within each the loss's per-token maxima and sums over "vocab".
Process 0 prints the loss, then trains the same model on one device and checks
that the two loss trajectories agree.

On this machine, N processes on the loopback address (8 host devices in all):

    python examples/multihost.py --processes 2

On real hosts, run one process per host with the same arguments, the
coordinator (process 0's address and a free port) in JAX's environment
variable and each process's index:

    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 python examples/multihost.py \\
        --num-processes 2 --process-id 0     # on 10.0.0.1; --process-id 1 on the other

Under Slurm, Open MPI or on Cloud TPU pods, give neither option:
`jax.distributed.initialize()` reads all three from the cluster.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxce

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_head  # noqa: E402

SIZES = dict(vocab=512, dim=32, context=3, batch=128, tokens=4_000, lr=3e-2)
DEVICES = 8  # in all, when this script starts the processes itself
TIMEOUT_S = 120


class Run(NamedTuple):
    losses: list[float]  # of each step, the same in every process
    step_seconds: float  # a step's time after the first (which compiles)
    program: str  # the compiled training step


def train(mesh: jax.sharding.Mesh, steps: int) -> Run:
    """`steps` Adam steps of the untied TinyLM on `mesh`: batches split over "data", the
    head's `[dim, vocab]` kernel over "vocab"."""
    tokens = lm_head.make_corpus(SIZES["vocab"], SIZES["tokens"])
    windows, targets = lm_head.windows_and_targets(tokens, SIZES["context"])
    model = lm_head.TinyLM(
        SIZES["vocab"], SIZES["dim"], SIZES["context"], tied=False, rngs=nnx.Rngs(0)
    )
    graphdef, params = nnx.split(model, nnx.Param)
    # Every process builds the same initial parameters, so each can place its own shards.
    specs = jax.tree.map(lambda p: P(*[None] * p.ndim), params)
    specs["head"]["kernel"] = P(None, "vocab")
    params = jax.device_put(params, jax.tree.map(lambda s: NamedSharding(mesh, s), specs))
    tx = optax.adam(SIZES["lr"])

    def body(params, windows):
        return nnx.merge(graphdef, params).hidden(windows)

    @jax.jit
    def step(params, opt_state, windows, targets):
        def loss(params):
            # Flax's embedding lookup takes no explicit sharding: the body runs with the
            # mesh's axes Auto, and its hidden states come out split over "data" as the
            # batch is. The fused head then sees them and its kernel split explicitly.
            hidden = jax.sharding.auto_axes(body, out_sharding=P("data"))(params, windows)
            kernel = nnx.merge(graphdef, params).kernel()
            return jaxce.linear_softmax_cross_entropy(hidden, kernel, targets)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    rows = NamedSharding(mesh, P("data"))
    # The global batch is the same list of rows everywhere; a process reads only those
    # that its devices hold (a contiguous block of the "data" axis).
    mine = rows.addressable_devices_indices_map((SIZES["batch"],))
    block = sorted({index[0].indices(SIZES["batch"])[:2] for index in mine.values()})
    start, stop = block[0][0], block[-1][1]
    order = np.random.default_rng(1).integers(0, len(targets), (steps, SIZES["batch"]))
    losses, started = [], 0.0
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init)(params)
        for batch in order:
            local = batch[start:stop]
            x, y = (
                jax.make_array_from_process_local_data(rows, a[local]) for a in (windows, targets)
            )
            if not losses:
                step = step.lower(params, opt_state, x, y).compile()
            params, opt_state, loss = step(params, opt_state, x, y)
            losses.append(float(loss))
            started = started if len(losses) > 1 else time.perf_counter()
    seconds = (time.perf_counter() - started) / max(steps - 1, 1)
    return Run(losses, seconds, step.as_text())


def data_vocab_mesh(devices=None) -> jax.sharding.Mesh:
    """Processes along "data", each one's devices along "vocab", both Explicit: the fused
    head sees its kernel split (on an Auto mesh it would gather it)."""
    devices = np.array(jax.devices() if devices is None else devices)
    shape = (jax.process_count() if devices.size > 1 else 1, -1)
    return jax.sharding.Mesh(devices.reshape(shape), ("data", "vocab"), (AxisType.Explicit,) * 2)


def run(steps: int) -> tuple[Run, Run]:
    """`train` across every process's devices, and on one device."""
    return train(data_vocab_mesh(), steps), train(data_vocab_mesh(jax.local_devices()[:1]), steps)


def collectives(program: str, kind: str) -> list[str]:
    """The `kind` operations ("all-gather", "all-reduce", ...) of a compiled program's text."""
    return re.findall(rf"= (\(.*?\)|\S+) {kind}(?:-start)?\(", program)


def launch(processes: int, argv: list[str]) -> int:
    """This script in `processes` local processes joined on 127.0.0.1; the first failing
    exit status (0 when all succeed). Every process is killed on the way out."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES // processes}",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{s.getsockname()[1]}"
    command = [sys.executable, __file__, *argv, "--num-processes", str(processes)]
    procs = [
        # The others would print process 0's lines again (their errors still show).
        subprocess.Popen([*command, "--process-id", str(i)], env=env, stdout=out)
        for i, out in enumerate([None] + [subprocess.DEVNULL] * (processes - 1))
    ]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return next((c for c in codes if c), 0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 4)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--processes", type=int, help="start N local processes (1: no others)")
    parser.add_argument("--num-processes", type=int, help="processes in the whole run")
    parser.add_argument("--process-id", type=int, help="this process's index")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    if args.processes and args.processes > 1:
        sys.exit(launch(args.processes, ["--steps", str(args.steps)]))
    if args.processes != 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        address = os.environ.get("JAX_COORDINATOR_ADDRESS", "")
        jax.distributed.initialize(
            num_processes=args.num_processes,
            process_id=args.process_id,
            # A local run listens on the loopback address only (JAX's default: every one).
            coordinator_bind_address=address if address.startswith("127.0.0.1:") else None,
            initialization_timeout=60,
            heartbeat_timeout_seconds=30,
        )
    here, one_device = run(args.steps)
    if jax.process_index() == 0:
        print(f"{jax.process_count()} processes, mesh {dict(data_vocab_mesh().shape)}")
        for i, loss in enumerate(here.losses):
            print(f"step {i:2d}  loss {loss:.6f}")
        gap = max(abs(a - b) for a, b in zip(here.losses, one_device.losses, strict=True))
        print(f"largest difference from the one-device run: {gap:.2e}")
        print(
            f"a step: {here.step_seconds * 1e3:.1f} ms here, "
            f"{one_device.step_seconds * 1e3:.1f} ms on one device; "
            f"{len(collectives(here.program, 'all-gather'))} all-gathers, "
            f"{len(collectives(here.program, 'all-reduce'))} all-reduces"
        )
        assert gap < 1e-5 * max(one_device.losses), "the run differs from one device's"
        first, last = here.losses[0], here.losses[-1]
        assert last < 0.9 * first, f"the loss should fall: {first} -> {last}"


if __name__ == "__main__":
    main()
