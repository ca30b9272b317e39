"""Fused linear head and knowledge distillation that never materialises the N x V logits.

The forward streams the vocabulary in chunks of the student's kernel
(`_linear_chunks`), as the fused cross-entropy head does. Each step computes one
`[N, chunk]` block of student logits `s = h W + b` and the same columns of the
teacher's logits `t` (sliced from given logits, or computed from the teacher's
hidden states and kernel), folds them into per-example statistics and drops
them. With `x = s / T`, `u = t / T`, `q = softmax(x)` and `p = softmax(u)`:

- the forward KL `sum_c p_c (u_c - x_c) - lse(u) + lse(x)` and the reverse KL
  `sum_c q_c (x_c - u_c) - lse(x) + lse(u)` take one pass: the running softmaxes
  of `x` and `u` (`_stream.Softmax`) carry the divergence's weighted sum;
- the Jensen-Shannon divergence mixes the two distributions, which needs both
  normalisers first: a second pass sums `KL(p || m)` and `KL(q || m)`;
- with `alpha > 0`, the student's softmax at temperature 1 and its target logit
  give the cross-entropy term.

The running softmaxes keep a running max and rescale their sums, rather than
combining chunk logsumexps with `logaddexp`: one `exp` per logit instead of two
for a weighted sum, and the max kept apart from the log-sum, so that the two
models' normalisers are subtracted without cancellation
(`test_linear_distill.py::test_large_offsets_lose_no_precision`).

The backward recomputes each block and turns it into its share of d hidden,
d kernel and d bias, summing on the way what the temperature's gradient needs.
The teacher is a constant: it gets no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _linear_chunks, _numerics, _stream
from ._linear_chunks import Plan
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import Summed, cotangents, per_example_rule
from ._stream import Chunk, Softmax, fold

DIVERGENCES = ("kl", "reverse_kl", "jsd")
where_mass, times = _numerics.where_mass, _numerics.times


class _Config(NamedTuple):
    plan: Plan  # the student's: chunking, dtypes, layout, vocabulary axes
    teacher_dot: Any  # the dtype of the teacher's dot; None for teacher logits
    divergence: str  # "kl", "reverse_kl" or "jsd"

    @property
    def axis(self) -> int:
        return self.plan.axis


class _Inputs(NamedTuple):
    hidden: jax.Array  # [N, D], the student's
    kernel: jax.Array  # [D, V] or [V, D]
    bias: jax.Array | None  # [V]
    teacher: jax.Array  # [N, V] logits, or [N, D_t] hidden states
    teacher_kernel: jax.Array | None  # [D_t, V] or [V, D_t], with hidden states
    teacher_bias: jax.Array | None  # [V], with hidden states
    classes: jax.Array | None  # [N], the labels of the cross-entropy term
    keep: jax.Array | None  # [N], the examples that count, when an option can exclude one
    present: jax.Array | None  # [N], the examples present, with example weights
    beta: Any  # the teacher's weight in the mixture (jsd only)
    temperature: Any  # divides both models' logits; scales the divergence by T^2
    alpha: Any  # the cross-entropy term's weight


class _Residuals(NamedTuple):
    q_shift: jax.Array  # [N, 1], of x = s / T (the student's)
    q_log_sum: jax.Array
    p_shift: jax.Array  # of u = t / T (the teacher's)
    p_log_sum: jax.Array
    divergence: jax.Array  # J, before the T^2
    kl_pm: Any  # KL(p || m) (jsd only)
    kl_qm: Any  # KL(q || m) (jsd only)
    s_shift: Any  # of s, at temperature 1 (alpha only; q's when T = 1)
    s_log_sum: Any
    target: Any  # s_y (alpha only)


def _scaled(x: jax.Array, temperature: Any) -> jax.Array:
    return x if temperature is None else x / temperature


def _logits(
    cfg: _Config, inp: _Inputs, h: jax.Array
) -> Callable[[jax.Array], tuple[Chunk, jax.Array, jax.Array]]:
    """`step -> (the student's block, x = s / T, u = t / T)`, each `[N, chunk]`, from the
    student's hidden states `h` as `_linear_chunks.counted_hidden` gives them."""
    plan = cfg.plan
    teacher_plan = plan._replace(dot_dtype=cfg.teacher_dot)
    th = inp.teacher if cfg.teacher_dot is None else inp.teacher.astype(cfg.teacher_dot)

    def logits(step: jax.Array) -> tuple[Chunk, jax.Array, jax.Array]:
        block = _linear_chunks.chunk(plan, h, inp.kernel, inp.bias, None, step)
        if inp.teacher_kernel is None:
            t = _linear_chunks.columns(plan, inp.teacher, step)
        else:
            t = _linear_chunks.chunk(
                teacher_plan, th, inp.teacher_kernel, inp.teacher_bias, None, step
            ).z
        return block, _scaled(block.z, inp.temperature), _scaled(t, inp.temperature)

    return logits


def _distill_fwd(cfg: _Config, inp: _Inputs) -> tuple[jax.Array, _Residuals]:
    plan, kind, alpha, temperature = cfg.plan, cfg.divergence, inp.alpha, inp.temperature
    n, dtype = inp.hidden.shape[0], plan.compute_dtype
    logits = _logits(
        cfg, inp, _linear_chunks.forward_hidden(plan, inp.hidden, inp.keep, inp.present)
    )
    own_ce = alpha is not None and temperature is not None  # else the CE's softmax is q

    def body(step, carry):
        q, p, s, target = carry
        block, x, u = logits(step)
        q = fold(q, x, block, (x - u,) if kind == "reverse_kl" else ())
        p = fold(p, u, block, (u - x,) if kind == "kl" else ())
        if s is not None:
            s = fold(s, block.z, block)
        if target is not None:
            assert inp.classes is not None
            target = target + _stream.at_target(inp.classes, block, block.z)
        return q, p, s, target

    init = (
        Softmax.empty(n, dtype, int(kind == "reverse_kl")),
        Softmax.empty(n, dtype, int(kind == "kl")),
        Softmax.empty(n, dtype) if own_ce else None,
        None if alpha is None else jnp.zeros((n,), dtype),
    )
    steps = _linear_chunks.num_steps(plan, inp.kernel)
    q, p, s, target = lax.fori_loop(0, steps, body, _linear_chunks.varying(init, *inp))
    if plan.axis_name is not None:
        (q, p, s), (target,) = _stream.combine((q, p, s), (target,), plan.axis_name)
    (q_shift, q_log_sum), (p_shift, p_log_sum) = q.normaliser(), p.normaliser()
    kl_pm = kl_qm = None
    if kind == "kl":  # sum_c p_c (u_c - x_c) - lse(u) + lse(x)
        div = p.mean(0) + (q_shift - p_shift) + (q_log_sum - p_log_sum)
    elif kind == "reverse_kl":  # sum_c q_c (x_c - u_c) - lse(x) + lse(u)
        div = q.mean(0) + (p_shift - q_shift) + (p_log_sum - q_log_sum)
    else:
        kl_pm, kl_qm = _mixture_kls(cfg, inp, logits, (q_shift, q_log_sum), (p_shift, p_log_sum))
        div = inp.beta * kl_pm + (1 - inp.beta) * kl_qm
    loss = div if temperature is None else temperature**2 * div
    s_shift = s_log_sum = None
    if alpha is not None:
        s_shift, s_log_sum = (q_shift, q_log_sum) if s is None else s.normaliser()
        target = target[:, None]
        loss = (1 - alpha) * loss + alpha * ((s_shift - target) + s_log_sum)
    residuals = _Residuals(
        q_shift, q_log_sum, p_shift, p_log_sum, div, kl_pm, kl_qm, s_shift, s_log_sum, target
    )
    return loss, residuals


def _mixture_kls(
    cfg: _Config, inp: _Inputs, logits: Callable, q_norm: tuple, p_norm: tuple
) -> tuple[jax.Array, jax.Array]:
    """`KL(p || m)` and `KL(q || m)`, `[N, 1]`, in a second pass once both normalisers are known."""
    n, dtype = inp.hidden.shape[0], cfg.plan.compute_dtype

    def body(step, carry):
        kl_pm, kl_qm = carry
        block, x, u = logits(step)
        (q, log_q), (p, log_p) = _numerics.normalised(x, *q_norm), _numerics.normalised(u, *p_norm)
        log_qm, log_pm = _numerics.mixture_log_ratios(q, log_q, p, log_p, inp.beta)
        kl_pm = kl_pm + jnp.sum(jnp.where(block.fresh, p * log_pm, 0), axis=1)
        kl_qm = kl_qm + jnp.sum(jnp.where(block.fresh, q * log_qm, 0), axis=1)
        return kl_pm, kl_qm

    init = (jnp.zeros((n,), dtype), jnp.zeros((n,), dtype))
    steps = _linear_chunks.num_steps(cfg.plan, inp.kernel)
    kls = lax.fori_loop(0, steps, body, _linear_chunks.varying(init, *inp, *q_norm, *p_norm))
    if cfg.plan.axis_name is not None:
        kls = lax.psum(kls, cfg.plan.axis_name)
    return kls[0][:, None], kls[1][:, None]


def _divergence_grads(
    kind: str, res: _Residuals, q: jax.Array, log_q: jax.Array, p: jax.Array, log_p: jax.Array, beta
) -> tuple[jax.Array, jax.Array]:
    """`dJ/dx` and `dJ/du` of the divergence `J` (before the T^2), `[N, chunk]` each."""
    if kind == "kl":  # J = KL(p || q)
        return q - p, where_mass(p, p * (log_p - log_q - res.divergence))
    if kind == "reverse_kl":  # J = KL(q || p)
        return where_mass(q, q * (log_q - log_p - res.divergence)), p - q
    # J = beta sum p log p + (1 - beta) sum q log q - sum m log m: the log m terms cancel in
    # dJ/dq_c = (1 - beta) log(q_c / m_c), so through the softmax
    # dJ/dx_c = (1 - beta) q_c (log(q_c / m_c) - KL(q || m)); likewise for the teacher.
    log_qm, log_pm = _numerics.mixture_log_ratios(
        q, where_mass(q, log_q), p, where_mass(p, log_p), beta
    )
    dj_dx = (1 - beta) * where_mass(q, q * (log_qm - res.kl_qm))
    return dj_dx, beta * where_mass(p, p * (log_pm - res.kl_pm))


def _distill_bwd(cfg: _Config, inp: _Inputs, res: _Residuals, g: jax.Array) -> _Inputs:
    plan, kind = cfg.plan, cfg.divergence
    beta, temperature, alpha = inp.beta, inp.temperature, inp.alpha
    h = _linear_chunks.counted_hidden(plan, inp.hidden, inp.keep)
    logits = _logits(cfg, inp, h)
    # d loss / d s_c = (1 - alpha) T dJ/dx_c + alpha (softmax(s)_c - [c = y]).
    g_div = g if alpha is None else g * (1 - alpha)
    g_x = g_div if temperature is None else g_div * temperature

    def body(step, carry):
        grads, centred = carry
        block, x, u = logits(step)
        log_q = x - res.q_shift - res.q_log_sum
        log_p = u - res.p_shift - res.p_log_sum
        q, p = jnp.exp(log_q), jnp.exp(log_p)
        dj_dx, dj_du = _divergence_grads(kind, res, q, log_q, p, log_p, beta)
        dz = g_x * dj_dx
        if alpha is not None:
            assert inp.classes is not None
            probs = q if temperature is None else jnp.exp(block.z - res.s_shift - res.s_log_sum)
            onehot = _stream.is_target(inp.classes, block)
            dz = dz + g * alpha * jnp.where(onehot, probs - 1, probs)
        if inp.keep is not None:
            dz = jnp.where(inp.keep[:, None], dz, 0)  # an excluded example's teacher may be NaN
        grads = _linear_chunks.backprop(plan, h, dz, block, grads, inp.kernel, inp.bias)
        if centred is not None:
            terms = times(dj_dx, log_q) + times(dj_du, log_p)
            centred = centred + jnp.sum(jnp.where(block.fresh, terms, 0), axis=1)
        return grads, centred

    centred = None if temperature is None else jnp.zeros(inp.hidden.shape[:1], plan.compute_dtype)
    (dh, dk, db), centred = _linear_chunks.backward_loop(
        plan, body, centred, inp.hidden, inp.kernel, inp.bias, (*inp, g, *res)
    )
    scale = 1 if temperature is None else temperature**2
    d_temperature = d_alpha = d_beta = None
    if temperature is not None:
        # d(T^2 J)/dT = T [2 J - sum_c dJ/dx_c log q_c - sum_c dJ/du_c log p_c]: x = s / T and
        # u = t / T, centred by their log-normalisers (each dJ/d. sums to 0 over c).
        centred = centred[:, None]
        if plan.axis_name is not None:
            centred = lax.psum(centred, plan.axis_name)
        d_temperature = g_div * temperature * (2 * res.divergence - centred)
    if alpha is not None:
        d_alpha = g * ((res.s_shift - res.target) + res.s_log_sum - scale * res.divergence)
    if kind == "jsd":
        # dJ/dbeta = sum p log p - sum q log q - sum (p - q)(log m + 1) = KL(p || m) - KL(q || m).
        d_beta = g_div * scale * (res.kl_pm - res.kl_qm)
    return cotangents(
        inp,
        hidden=dh,
        kernel=Summed(dk),
        bias=Summed(db),
        beta=d_beta,
        temperature=d_temperature,
        alpha=d_alpha,
    )


_distill = per_example_rule(_distill_fwd, _distill_bwd)


def _losses(
    cfg: _Config,
    mask: jax.Array,
    bad: jax.Array | None,
    inp: _Inputs,
    example_weights: jax.Array | None = None,
) -> jax.Array:
    """Per-example losses; the generalised JSD is exactly the forward and reverse KL at 0 and 1."""
    v = example_weights
    if cfg.divergence != "jsd":
        return _distill(cfg, mask, bad, inp, v)
    if inp.beta is None:  # a concrete 0: the forward KL is the whole program
        return _distill(cfg._replace(divergence="kl"), mask, bad, inp, v)
    # Any other beta arrives traced (a schedule compiles once), so the endpoints, where the
    # divergence jumps from 0 to a KL, are chosen at run time; only the chosen branch runs.
    branches = [
        lambda m, b, i, v: _distill(cfg, m, b, i, v),
        lambda m, b, i, v: _distill(cfg._replace(divergence="kl"), m, b, i, v),
        lambda m, b, i, v: _distill(cfg._replace(divergence="reverse_kl"), m, b, i, v),
    ]
    index = jnp.where(inp.beta == 0, 1, jnp.where(inp.beta == 1, 2, 0))
    return lax.switch(index, branches, mask, bad, inp, v)


def _teacher(
    teacher: ArrayLike,
    kernel: ArrayLike | None,
    bias: ArrayLike | None,
    example_shape: tuple[int, ...],
    num_classes: int,
    layout: str,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """The teacher's logits `(..., V)`, or its hidden states `(..., D_t)`, kernel and bias."""
    if kernel is None:
        if bias is not None:
            raise ValueError(
                "teacher_bias applies to a teacher given as hidden states (with "
                "teacher_kernel); got teacher_kernel=None."
            )
        teacher = _checks.floating("teacher", teacher)
        _checks.same_shape(
            "teacher",
            teacher,
            (*example_shape, num_classes),
            "the teacher's logits: hidden's examples by the kernel's classes",
        )
        return teacher, None, None
    names = ("teacher", "teacher_kernel", "teacher_bias")
    teacher, kernel, bias = _linear_chunks.validate(teacher, kernel, bias, layout, names)
    if teacher.shape[:-1] != example_shape:
        raise ValueError(
            f"teacher must have shape {(*example_shape, teacher.shape[-1])} (hidden's examples "
            f"by the teacher's features); got {teacher.shape}."
        )
    classes = kernel.shape[layout.index("V")]
    if classes != num_classes:
        raise ValueError(
            f"teacher_kernel must have {num_classes} classes (the student kernel's); got {classes}."
        )
    return teacher, kernel, bias


def _divergence_name(name: str, value: Any) -> str:
    return _checks.one_of(name, value, DIVERGENCES)


@entry_point(
    static=("divergence", "chunk_size", "ignore_index", "reduction", "axis_name", "kernel_layout"),
    hyperparameters={
        "beta": _checks.UNIT,
        "temperature": _checks.POSITIVE,
        "alpha": _checks.UNIT,
    },
    # beta = 0: the forward KL alone; alpha = 0: no cross-entropy term (nor labels).
    off={"beta": 0.0, "temperature": 1.0, "alpha": 0.0},
    checks={
        "divergence": _divergence_name,
        "chunk_size": _linear_chunks.check_chunk_size,
        "kernel_layout": _linear_chunks.check_layout,
    },
)
def linear_distillation_loss(
    hidden: ArrayLike,
    kernel: ArrayLike,
    teacher: ArrayLike,
    *,
    teacher_kernel: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    divergence: str = "kl",
    beta: ArrayLike = 0.5,
    temperature: ArrayLike = 1.0,
    labels: ArrayLike | None = None,
    alpha: ArrayLike = 0.0,
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    where: ArrayLike | None = None,
    kernel_layout: str = "DV",
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Knowledge distillation of a linear head, without materialising either model's logits.

    With the student's logits $s_i = h_i W + b$, the teacher's $t_i$ (given, or
    $t_i = h^t_i W^t + b^t$ from its hidden states), their softmaxes at
    temperature $T$, $q_i = \operatorname{softmax}(s_i / T)$ and
    $p_i = \operatorname{softmax}(t_i / T)$, the loss of example $i$ is

    $$
    \ell_i = (1 - \alpha)\, T^2 D(p_i, q_i)
      + \alpha \big(\operatorname{lse}(s_i) - s_{i y_i}\big),
    $$

    the cross-entropy at temperature 1 with `labels` $y$, and the divergence
    $D$ is `"kl"`, $\mathrm{KL}(p_i \,\|\, q_i)$ (Hinton et al.,
    [`distillation_loss`][jaxce.distillation_loss]), `"reverse_kl"`,
    $\mathrm{KL}(q_i \,\|\, p_i)$
    ([`reverse_kl_divergence`][jaxce.reverse_kl_divergence]), or `"jsd"`, GKD's
    generalised Jensen-Shannon divergence
    $\beta\, \mathrm{KL}(p_i \,\|\, m_i) + (1 - \beta)\, \mathrm{KL}(q_i \,\|\, m_i)$
    with $m_i = \beta p_i + (1 - \beta) q_i$, exactly the forward KL at
    $\beta = 0$ and the reverse KL at $\beta = 1$
    ([`jensen_shannon_divergence`][jaxce.jensen_shannon_divergence]). `"mean"`
    divides the sum by $S$, the number of counted examples (each counted with
    its example weight); $0 \log 0 = 0$ and `-inf` logits follow those
    functions.

    It equals those losses on `hidden @ kernel + bias` (plus
    [`softmax_cross_entropy`][jaxce.softmax_cross_entropy] for $\alpha > 0$),
    with the teacher's logits under `jax.lax.stop_gradient`, but streams the
    vocabulary in chunks like
    [`linear_softmax_cross_entropy`][jaxce.linear_softmax_cross_entropy]: the
    forward folds each chunk of both models' logits into running softmax
    statistics (one pass for the KLs; the Jensen-Shannon divergence needs both
    normalisers first, so it takes a second), and the backward (a
    `jax.custom_vjp`) recomputes each chunk and accumulates
    $\partial L/\partial h$, $\partial L/\partial W$ and $\partial L/\partial b$
    from $\partial \ell_i/\partial s_i = (1-\alpha)\, T\, \partial D/\partial x_i
    + \alpha\,(\operatorname{softmax}(s_i) - Y_i)$, $x_i = s_i / T$. Peak memory
    is $O(N \cdot \text{chunk} + N D)$ instead of $O(N V)$ for each model, for
    3/2 of the materialised path's matmul work with a teacher given as hidden
    states (2 for `"jsd"`).

    `beta`, `temperature` and `alpha` may be Python numbers or traced scalars
    (a schedule compiles once), each with its exact gradient:
    $\partial \ell_i/\partial \alpha = \mathrm{CE}_i - T^2 D_i$,
    $\partial \ell_i/\partial \beta = (1 - \alpha)\, T^2
    \big(\mathrm{KL}(p_i \| m_i) - \mathrm{KL}(q_i \| m_i)\big)$ and
    $\partial \ell_i/\partial T = (1 - \alpha)\, T \big[2 D_i
    - \sum_c \partial D_i/\partial x_{ic} \log q_{ic}
    - \sum_c \partial D_i/\partial u_{ic} \log p_{ic}\big]$, $u_i = t_i / T$,
    whose sums the backward accumulates chunk by chunk. Unlike
    `distillation_loss`, the teacher is a constant: its logits, hidden states,
    kernel and bias get a zero gradient. Half-precision inputs are multiplied
    with float32 accumulation. Reverse mode only (see `autodiff`).

    Args:
      hidden: the student's floating hidden states `(..., D)`; the leading
        dimensions are examples.
      kernel: floating `(D, V)` (Flax `Dense`), or `(V, D)` with
        `kernel_layout="VD"`.
      teacher: the teacher's floating logits `(..., V)`, read a chunk at a
        time; or, with `teacher_kernel`, its hidden states `(..., D_t)`.
      teacher_kernel: the teacher's `(D_t, V)` kernel (`(V, D_t)` with
        `kernel_layout="VD"`), or None when `teacher` holds logits.
      bias: optional floating `(V,)`, the student's; a `-inf` entry masks a class.
      teacher_bias: optional floating `(V,)`, the teacher's (with `teacher_kernel`).
      divergence: `"kl"`, `"reverse_kl"` or `"jsd"`.
      beta: the teacher's weight $\beta \in [0, 1]$ in the mixture (`"jsd"` only).
      temperature: $T > 0$.
      labels: integer classes in `[0, V)`, shape `hidden.shape[:-1]`; required
        unless `alpha` is a Python 0.
      alpha: $\alpha \in [0, 1]$, the weight of the cross-entropy term. The
        three float options may be traced (a schedule compiles once) and get
        exact gradients.
      chunk_size: vocabulary columns per step. None picks about $2^{20}/N$
        on the CPU and $2^{23}/N$ on an accelerator, at least 128.
      ignore_index: integer label whose examples are excluded (with `labels`).
      where: boolean mask broadcastable to `hidden.shape[:-1]`; False
        excludes an example. An excluded example's hidden state and teacher
        may hold anything (inf or NaN from a padding token): no gradient sees
        them.
      kernel_layout: `"DV"` or `"VD"`, for both models' kernels, read as they are.
      reduction: `"mean"`, `"sum"` or `"none"` (per example, 0 where excluded).
      denominator: replaces $S$ in `"mean"`.
      example_weights: $v$, floating, broadcastable to `hidden.shape[:-1]`:
        multiplies each example's loss and its share of $S$, with an exact
        gradient; 0 is `where=False` (exactly 0; its derivative is its
        loss). Should be non-negative (not checked, not clipped).
      axis_name: inside `jax.shard_map` with both kernels (or the teacher's
        logits) and biases sharded over the vocabulary along this mesh axis:
        each device streams its own columns, the per-example statistics are
        combined with one `pmax` and one `psum` (one more `psum` for `"jsd"`),
        and d hidden with one `psum` in the backward. Outside `shard_map`, a
        kernel (or teacher) sharded over the vocabulary on an `Explicit` mesh
        takes this path automatically; on an `Auto` mesh the partitioner
        gathers the kernels (the logits are never built either way).
      autodiff: `"reverse"` only: the head computes each chunk's logits again
        in its backward and has no forward-mode rule; `"forward"` raises.

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      inputs, whose gradients come back in their own dtype.

    Raises:
      TypeError: non-floating `hidden`, `kernel`, `teacher` or biases,
        non-integer `labels`, a non-boolean `where`, an array for a static
        option.
      ValueError: mismatched shapes, missing `labels` with `alpha` other than a
        Python 0, `ignore_index` without `labels`, `teacher_bias` without
        `teacher_kernel`, an unknown `divergence`, `kernel_layout` or
        `reduction`, `chunk_size < 1`, a concrete `beta` or `alpha` outside
        [0, 1] or `temperature <= 0`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import jaxce
      >>> hidden = jnp.array([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]])
      >>> kernel = jnp.array([[1.0, -1.0, 0.5, 0.0, 2.0], [0.0, 1.0, -0.5, 1.0, 0.0]])
      >>> teacher = jnp.array([[1.0, 0.0, 0.5, 0.0, 3.0], [1.0, -2.0, 1.5, 0.0, 0.0],
      ...                      [0.0, 1.5, -1.0, 2.5, 0.0]])
      >>> fused = jaxce.linear_distillation_loss(
      ...     hidden, kernel, teacher, temperature=2.0, chunk_size=2)
      >>> unfused = jaxce.distillation_loss(hidden @ kernel, teacher, temperature=2.0)
      >>> with jnp.printoptions(precision=4):
      ...     print(jnp.stack([fused, unfused]))
      [0.1577 0.1577]
      >>> labels = jnp.array([4, 2, 3])
      >>> gkd = jaxce.linear_distillation_loss(
      ...     hidden, kernel, teacher, divergence="jsd", beta=0.5, labels=labels, alpha=0.1)
      >>> print(f"{gkd:.4f}")
      0.1206

    References:
      Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
      Network", 2015. https://arxiv.org/abs/1503.02531

      Agarwal et al., "On-Policy Distillation of Language Models: Learning
      from Self-Generated Mistakes", ICLR 2024. https://arxiv.org/abs/2306.13649
    """
    head = _linear_chunks.head(
        hidden,
        kernel,
        labels,
        bias=bias,
        layout=kernel_layout,
        chunk_size=chunk_size,
        axis_name=axis_name,
        ignore_index=ignore_index,
        where=where,
        example_weights=example_weights,
        autodiff=autodiff,
    )
    example_shape, v, mask, rows = head.example_shape, head.example_weights, head.mask, head.rows
    teacher, teacher_kernel, teacher_bias = _teacher(
        teacher, teacher_kernel, teacher_bias, example_shape, head.num_classes, kernel_layout
    )
    if labels is None and alpha is not None:
        raise ValueError(
            "labels are required for the cross-entropy term when alpha is not a Python 0; "
            "got labels=None."
        )
    plan, mesh = head.plan(
        (teacher, teacher_kernel, teacher_bias),
        # A teacher sharded over the vocabulary shards the loop too, also beside a whole kernel.
        class_inputs=(
            (teacher, teacher.ndim - 1)
            if teacher_kernel is None
            else (teacher_kernel, kernel_layout.index("V")),
        ),
    )
    teacher_dot = None
    if teacher_kernel is not None:
        same = teacher.dtype == teacher_kernel.dtype
        teacher_dot = teacher.dtype if same else plan.compute_dtype
    cfg = _Config(plan, teacher_dot, divergence)
    inputs = _Inputs(
        head.flat(head.hidden),
        head.kernel,
        head.bias,
        head.flat(teacher),
        teacher_kernel,
        teacher_bias,
        None if alpha is None else rows.classes,
        rows.keep,
        rows.present,
        beta if divergence == "jsd" else None,
        temperature,
        alpha,
    )
    if mesh is None:
        losses = _losses(cfg, rows.mask, rows.bad, inputs, rows.weights)
    else:
        teacher_kind = "logits" if teacher_kernel is None else "rows"
        kinds = (
            "rows",
            "kernel",
            "classes",
            teacher_kind,
            "kernel",
            "classes",
            "rows",
            "rows",
            "rows",
        )
        losses = _linear_chunks.per_shard(
            _losses,
            plan,
            mesh,
            (rows.mask, rows.bad),
            inputs,
            (*kinds, "whole", "whole", "whole"),
            rows.weights,
            cfg,
        )
    losses = losses.reshape(example_shape)
    norm = _labels.weighted_count(mask, v, losses.dtype)
    return reduce_loss(losses, norm, reduction, denominator)
