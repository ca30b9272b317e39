"""CLIP's training step on towers placed on an 8-device `Explicit` mesh (host CPU devices):
rows split over the devices, where each device streams its own rows against every column,
against the same towers replicated, where every device streams the whole batch.

    python benchmarks/contrastive_mesh.py N D [ROUNDS]

Prints each placement's median time over alternating rounds, its compiled temp, and the
largest difference between the two's values and gradients.
"""

import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402


def loss(a, b, t):
    return jaxce.contrastive_cross_entropy(a, b, temperature=t)


def main() -> None:
    n, d = (int(x) for x in sys.argv[1:3])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Explicit,))
    rng = np.random.default_rng(0)
    towers = [rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d) for _ in "ab"]
    t = jnp.float32(0.07)
    steps, outputs = {}, {}
    for name, spec in (("split", P("batch")), ("replicated", P())):
        a, b = (jax.device_put(x, NamedSharding(mesh, spec)) for x in towers)
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(a, b, t).compile()
        outputs[name] = jax.block_until_ready(compiled(a, b, t))
        steps[name] = (compiled, (a, b, t))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (compiled, args) in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - start)
    for name, (compiled, _) in steps.items():
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
        print(f"{name}: {1e3 * np.median(times[name]):.1f} ms, temp {temp:.1f} MiB")
    ratio = np.median(times["split"]) / np.median(times["replicated"])
    leaves = zip(*(jax.tree.leaves(outputs[name]) for name in steps), strict=True)
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in leaves)
    print(f"split / replicated: {ratio:.2f}x the time; largest difference {diff:.1e}")


if __name__ == "__main__":
    main()
