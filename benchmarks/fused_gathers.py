"""The all-gathers in the fused heads' compiled training step on 8 host CPU devices, with
the kernel and the teacher's logits split over the vocabulary, on an Auto and on an
Explicit mesh: what the partitioner gathers where the loss cannot see the placement.

    python benchmarks/fused_gathers.py

Prints, for each head and mesh, the shapes of the all-gathers' results.
"""

import os
import re

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402

N, D, V = 64, 16, 256  # the examples split over "data" (2), the classes over "vocab" (4)


def main() -> None:
    rng = np.random.default_rng(0)
    hidden, kernel, teacher = (
        rng.normal(size=shape).astype(np.float32) for shape in ((N, D), (D, V), (N, V))
    )
    labels = rng.integers(0, V, N)
    heads = {
        "linear_softmax_cross_entropy": lambda h, k, t: jaxce.linear_softmax_cross_entropy(
            h, k, labels, chunk_size=32
        ),
        "linear_distillation_loss": lambda h, k, t: jaxce.linear_distillation_loss(
            h, k, t, chunk_size=32
        ),
    }
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((2, 4), ("data", "vocab"), axis_types=(axis_type,) * 2)
        placed = [
            jax.device_put(jnp.asarray(x), NamedSharding(mesh, spec))
            for x, spec in zip(
                (hidden, kernel, teacher),
                (P("data"), P(None, "vocab"), P("data", "vocab")),
                strict=True,
            )
        ]
        for name, loss in heads.items():
            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            with jax.set_mesh(mesh):
                hlo = step.lower(*placed).compile().as_text()
            gathers = sorted(
                set(re.findall(r"= (\w+\[[\d,]*\])[^ ]* all-gather(?:-start)?\(", hlo))
            )
            print(f"{axis_type.name:8} {name}: {', '.join(gathers) or 'no all-gather'}")


if __name__ == "__main__":
    main()
