"""The contrastive losses' `axis_name=` (an all-gather of `b`) against a `ppermute` ring of
the same streamed loss: SigLIP's training step inside `shard_map` on 8 host CPU devices.

    python benchmarks/contrastive_ring.py N D CHUNK [ROUNDS]

Prints each form's median time over alternating rounds, its compiled temp, and how far the
two forms' values and gradients are apart.
"""

import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402

DEVICES = 8


def gathered(a, b, t, c, chunk):
    return jaxce.sigmoid_contrastive_loss(
        a, b, temperature=t, bias=c, chunk_size=chunk, axis_name="x"
    )


def ring(a, b, t, c, chunk):
    """Each device's rows against its own slice of `b` (the positives on the diagonal),
    then against each other device's slice as it comes round (negatives only: with labels
    0, the term of column 0 is counted as a positive and corrected by its similarity)."""
    n = a.shape[0]
    perm = [(i, (i + 1) % DEVICES) for i in range(DEVICES)]
    kw = dict(temperature=t, bias=c, chunk_size=chunk, reduction="none")
    total = jnp.sum(jaxce.sigmoid_contrastive_loss(a, b, **kw))
    shard = b
    for _ in range(DEVICES - 1):
        shard = lax.ppermute(shard, "x", perm)
        negatives = jaxce.sigmoid_contrastive_loss(a, shard, labels=jnp.zeros(n, int), **kw)
        total = total + jnp.sum(negatives + (a @ shard[0]) / t + c)
    return lax.psum(total, "x") / (n * DEVICES)


def main() -> None:
    n, d, chunk = (int(x) for x in sys.argv[1:4])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 9
    mesh = jax.make_mesh((DEVICES,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d), jnp.float32) for _ in "ab")
    forms, outputs = {}, {}
    with jax.set_mesh(mesh):
        args = (jax.reshard(a, P("x")), jax.reshard(b, P("x")), jnp.float32(0.1), -5.0)
        for name, loss in (("all-gather", gathered), ("ring", ring)):
            f = jax.shard_map(
                lambda a, b, t, c, loss=loss: loss(a, b, t, c, chunk),
                in_specs=(P("x"), P("x"), P(), P()),
                out_specs=P(),
            )
            compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2))).lower(*args).compile()
            outputs[name] = jax.block_until_ready(compiled(*args))
            forms[name] = (compiled, compiled.memory_analysis().temp_size_in_bytes, [])
        for _ in range(rounds):
            for compiled, _, times in forms.values():
                start = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                times.append(time.perf_counter() - start)
    for name, (_, temp, times) in forms.items():
        print(f"{name}: {np.median(times) * 1e3:.1f} ms, temp {temp / 2**20:.2f} MiB")
    ratio = np.median(forms["ring"][2]) / np.median(forms["all-gather"][2])
    leaves = [jax.tree.leaves(outputs[name]) for name in ("ring", "all-gather")]
    pairs = zip(*leaves, strict=True)
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in pairs)
    print(
        f"N={n} D={d} chunk={chunk}: ring / all-gather {ratio:.2f}; largest difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
