"""Two towers trained with CLIP's loss and a learned temperature, on scikit-learn's digits.

Each 8x8 digit is cut in two: one tower (a Flax NNX `Linear`) embeds its top
half, the other its bottom half, and `jaxce.contrastive_cross_entropy` pulls the
two halves of the same digit together, against every other digit of the batch.
The temperature is learned as CLIP learns it: a parameter `t = log(1/T)`,
initialised at `log(1/0.07)` and capped at `log(100)`, and `T = exp(-t)`.
Trained with Optax Adam, it prints the loss and the temperature, then the
retrieval accuracy on held-out digits (for each top half, is the closest bottom
half its own, or at least of the same digit?), and checks that the loss fell
and that retrieval beats chance.

    python examples/contrastive.py            # 300 steps
    python examples/contrastive.py --steps 60
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxce

WIDTH = 32  # the embeddings' width
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on log(1/T)


class Towers(nnx.Module):
    """Two linear towers to L2-normalised embeddings, and CLIP's learned `log(1/T)`."""

    def __init__(self, features: int, rngs: nnx.Rngs):
        self.top = nnx.Linear(features, WIDTH, rngs=rngs)
        self.bottom = nnx.Linear(features, WIDTH, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(math.log(1 / 0.07)))

    def temperature(self) -> jax.Array:
        return jnp.exp(-jnp.minimum(self.logit_scale[...], MAX_LOGIT_SCALE))

    def __call__(self, top: jax.Array, bottom: jax.Array) -> tuple[jax.Array, jax.Array]:
        a, b = self.top(top), self.bottom(bottom)
        return (
            a / jnp.linalg.norm(a, axis=-1, keepdims=True),
            b / jnp.linalg.norm(b, axis=-1, keepdims=True),
        )


def halves(seed: int = 0) -> tuple[dict[str, np.ndarray], ...]:
    """Top and bottom halves (32 pixels each) and the digit, split 80/20 into train and test."""
    x, y = load_digits(return_X_y=True)
    images = (x / 16.0).astype(np.float32).reshape(-1, 8, 8)
    data = {"top": images[:, :4].reshape(-1, 32), "bottom": images[:, 4:].reshape(-1, 32), "y": y}
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return tuple({k: v[idx] for k, v in data.items()} for idx in (order[:cut], order[cut:]))


def train(
    steps: int = 300, batch: int = 256, seed: int = 0, every: int = 50
) -> tuple[list[float], Towers, dict[str, np.ndarray]]:
    """The losses per step, the trained towers, and the held-out digits."""
    train_set, test_set = halves(seed)
    model = Towers(32, nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, top, bottom):
        def loss_fn(model):
            a, b = model(top, bottom)
            return jaxce.contrastive_cross_entropy(a, b, temperature=model.temperature())

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for i in range(steps):
        idx = rng.choice(len(train_set["y"]), batch, replace=False)
        losses.append(
            float(step(model, optimizer, train_set["top"][idx], train_set["bottom"][idx]))
        )
        if i % every == 0 or i == steps - 1:
            t = float(model.temperature())
            print(f"Step {i:3d} | loss {losses[-1]:.4f} | temperature {t:.4f}")
    return losses, model, test_set


def retrieval(model: Towers, data: dict[str, np.ndarray]) -> tuple[float, float]:
    """For each top half, whether the closest bottom half is its own, and whether it is of
    the same digit."""
    a, b = model(jnp.asarray(data["top"]), jnp.asarray(data["bottom"]))
    nearest = np.asarray(jnp.argmax(a @ b.T, axis=1))
    own = float(np.mean(nearest == np.arange(len(nearest))))
    same_digit = float(np.mean(data["y"][nearest] == data["y"]))
    return own, same_digit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    losses, model, test_set = train(args.steps)
    own, same_digit = retrieval(model, test_set)
    n = len(test_set["y"])
    print(f"Learned temperature {float(model.temperature()):.4f} (from 0.07)")
    print(
        f"Held-out retrieval over {n} digits: own half {own:.1%} (chance {1 / n:.1%}), "
        f"same digit {same_digit:.1%} (chance about 10%)"
    )
    assert losses[-1] < 0.7 * losses[0], (
        f"the loss should fall; {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    assert own > 20 / n and same_digit > 0.5, (own, same_digit)


if __name__ == "__main__":
    main()
