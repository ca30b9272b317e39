"""Trains a Flax NNX `Linear(3, 3)` with Optax SGD towards class 2 using jaxce.

Run with `make demo`. Prints the loss and logits every 10 steps and checks that
the loss fell at least fivefold.
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import jaxce


def train(steps: int = 51, seed: int = 0) -> list[float]:
    model = nnx.Linear(3, 3, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    x = jnp.array([[1.0, 0.0, 0.0]])
    target = jnp.array([2])

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            logits = model(x)
            return jaxce.softmax_cross_entropy(logits, target), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, logits

    losses = []
    for i in range(steps):
        loss, logits = step(model, optimizer)
        losses.append(float(loss))
        if i % 10 == 0:
            shown = jax.device_get(logits).round(3).ravel()
            print(f"Step {i:2d} | Loss: {float(loss):.4f} | Logits: {shown}")
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=51)
    args = parser.parse_args()
    losses = train(args.steps)
    ratio = losses[0] / losses[-1]
    print(f"Loss fell {ratio:.1f}x: {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert ratio >= 5, f"the loss should fall at least fivefold; it fell {ratio:.2f}x"


if __name__ == "__main__":
    main()
