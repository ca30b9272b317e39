"""A tiny causal language model trained with the fused linear cross-entropy head.

Embedding -> MLP over a short window of previous tokens -> tied or untied
output head (Flax NNX + Optax), trained on text generated here (a small
stochastic grammar, so no download). The same model is trained twice, once with
`jaxce.linear_softmax_cross_entropy` (the N x V logits never exist) and once with
the materialised head (`hidden @ kernel` then `softmax_cross_entropy`); the
script prints tokens/s and the compiled peak temporary memory of one training
step for each, side by side, and checks that the loss fell.

    python examples/lm_head.py            # vocabulary of 8192 "words"
    python examples/lm_head.py --quick    # CI smoke test
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax
from flax import nnx

import jaxce


def make_corpus(vocab: int, length: int, seed: int = 0) -> np.ndarray:
    """Token ids from a random sparse bigram grammar: each word has 4 likely successors."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, size=(vocab, 4))
    probs = np.array([0.55, 0.25, 0.15, 0.05])
    tokens = np.empty(length, np.int32)
    tokens[0] = 0
    choices = rng.choice(4, size=length, p=probs)
    for i in range(1, length):
        tokens[i] = successors[tokens[i - 1], choices[i]]
    return tokens


class TinyLM(nnx.Module):
    """Embeds the last `context` tokens, mixes them with an MLP, returns hidden states."""

    def __init__(self, vocab: int, dim: int, context: int, *, tied: bool, rngs: nnx.Rngs):
        self.context = context
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.mix = nnx.Linear(context * dim, 2 * dim, rngs=rngs)
        self.out = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.head = None if tied else nnx.Linear(dim, vocab, use_bias=False, rngs=rngs)

    def hidden(self, windows: jax.Array) -> jax.Array:
        x = self.embed(windows)  # [B, context, dim]
        x = x.reshape(x.shape[0], -1)
        return self.out(jax.nn.gelu(self.mix(x)))

    def kernel(self) -> jax.Array:
        """The `[dim, vocab]` head kernel (the embedding's transpose when tied)."""
        return self.embed.embedding.T if self.head is None else self.head.kernel


def windows_and_targets(tokens: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(context)[None, :] + np.arange(len(tokens) - context)[:, None]
    return tokens[idx], tokens[context:]


def loss_fn(model: TinyLM, windows, targets, fused: bool) -> jax.Array:
    hidden = model.hidden(windows)
    kernel = model.kernel()
    if fused:
        return jaxce.linear_softmax_cross_entropy(hidden, kernel, targets)
    return jaxce.softmax_cross_entropy(hidden @ kernel, targets)


def train(args, fused: bool) -> dict:
    tokens = make_corpus(args.vocab, args.tokens)
    xs, ys = windows_and_targets(tokens, args.context)
    model = TinyLM(args.vocab, args.dim, args.context, tied=args.tied, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, windows, targets):
        loss, grads = nnx.value_and_grad(loss_fn)(model, windows, targets, fused)
        optimizer.update(model, grads)
        return loss

    head = "fused" if fused else "materialised"
    print(f"{head} head: compiling, then {args.steps} steps of {args.batch} tokens", flush=True)
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, len(xs), args.batch) for _ in range(args.steps)]
    memory = step.lower(model, optimizer, xs[batches[0]], ys[batches[0]]).compile()
    temp = memory.memory_analysis().temp_size_in_bytes
    losses = [float(step(model, optimizer, xs[batches[0]], ys[batches[0]]))]  # compiles
    start = time.perf_counter()
    for b in batches[1:]:
        losses.append(float(step(model, optimizer, xs[b], ys[b])))
    elapsed = time.perf_counter() - start
    print(f"{head} head: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {elapsed:.1f} s", flush=True)
    return {
        "losses": losses,
        "tokens_per_s": args.batch * (args.steps - 1) / elapsed,
        "temp_bytes": temp,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--untied", dest="tied", action="store_false", help="separate head")
    args = parser.parse_args(argv)
    if args.quick:
        sizes = dict(vocab=512, dim=32, context=3, batch=256, steps=30, tokens=20_000, lr=1e-2)
    else:
        sizes = dict(vocab=8192, dim=128, context=4, batch=2048, steps=60, tokens=200_000, lr=3e-3)
    for key, value in sizes.items():
        setattr(args, key, value)

    results = {
        name: train(args, fused) for name, fused in [("fused", True), ("materialised", False)]
    }
    print(f"vocab={args.vocab} dim={args.dim} batch={args.batch} tied={args.tied}")
    print(f"{'head':<14}{'first loss':>11}{'last loss':>11}{'tokens/s':>12}{'temp MiB':>10}")
    for name, r in results.items():
        print(
            f"{name:<14}{r['losses'][0]:>11.4f}{r['losses'][-1]:>11.4f}"
            f"{r['tokens_per_s']:>12.0f}{r['temp_bytes'] / 2**20:>10.1f}"
        )
    fused = results["fused"]["losses"]
    assert fused[-1] < 0.8 * fused[0], f"the loss should fall; it went {fused[0]} -> {fused[-1]}"


if __name__ == "__main__":
    main()
