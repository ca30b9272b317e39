"""KL divergences, entropy and knowledge distillation, with analytic backwards.

One custom_vjp core, `_soft_kl`, computes the per-example KL(p || q) between a
target distribution p and q = softmax(x / T) for three kinds of targets:
probabilities, log-probabilities, and teacher logits (then p = softmax(t / T)).
`kl_divergence`, `distillation_loss` and `reverse_kl_divergence` (the same
rule with student and teacher swapped) are thin fronts over it;
`jensen_shannon_divergence` has its own rule for 0 < beta < 1 and is that KL
rule at its endpoints. The forward keeps per-example numbers only (shifts,
log-normalisers, divergences); the backward recomputes p and q from the
inputs, so nothing of size N x K is stored between the two.

Zero target mass contributes nothing (0 log 0 = 0): every product with a target
probability is guarded by `p != 0`, with a second guard inside the logarithm,
so the unselected branch is finite and its gradient is exactly 0, also when the
backward is itself differentiated.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import cotangents, per_example_rule

_PROBS, _LOG_PROBS, _LOGITS = "probs", "log_probs", "logits"
where_mass = _numerics.where_mass


class _Config(NamedTuple):
    axis: int
    targets: str = _PROBS  # _PROBS, _LOG_PROBS or _LOGITS (teacher logits)


class _KLInputs(NamedTuple):
    logits: jax.Array
    targets: jax.Array
    temperature: Any  # divides the logits (and teacher logits), scales the loss by T^2


class _KLResiduals(NamedTuple):
    shift: jax.Array  # of x / T
    log_sum: jax.Array
    kl: jax.Array
    p_sum: jax.Array | None  # the target mass: 1 for teacher logits, anything for given targets


def _scaled(x: jax.Array, temperature: Any) -> jax.Array:
    return x if temperature is None else x / temperature


def _log_targets(cfg: _Config, inp: _KLInputs, dtype: Any):
    """`(p, log p)` of the targets; `log p` is 0 (not -inf) where `p == 0`.

    Teacher logits are normalised again in the backward rather than saving
    their log-normaliser: it costs one pass over the logits, but keeps the
    residuals to a few numbers per example for every kind of target.
    """
    t = inp.targets.astype(dtype)
    if cfg.targets == _PROBS:
        return t, jnp.log(jnp.where(t == 0, 1, t))
    if cfg.targets == _LOG_PROBS:
        p = jnp.exp(t)
        return p, where_mass(p, t)
    u = _scaled(t, inp.temperature)
    return _numerics.normalised(u, *_numerics.log_normaliser(u, cfg.axis))


def _soft_kl_fwd(cfg: _Config, inp: _KLInputs) -> tuple[jax.Array, _KLResiduals]:
    dtype = _checks.compute_dtype(inp.logits.dtype, inp.targets.dtype)
    x = _scaled(inp.logits.astype(dtype), inp.temperature)
    shift, log_sum = _numerics.log_normaliser(x, cfg.axis)
    p, log_p = _log_targets(cfg, inp, dtype)
    log_q = where_mass(p, x - shift - log_sum)
    kl = jnp.sum(where_mass(p, p * (log_p - log_q)), cfg.axis, keepdims=True)
    p_sum = None if cfg.targets == _LOGITS else jnp.sum(p, cfg.axis, keepdims=True)
    loss = kl if inp.temperature is None else kl * inp.temperature**2
    return loss, _KLResiduals(shift, log_sum, kl, p_sum)


def _soft_kl_bwd(cfg: _Config, inp: _KLInputs, res: _KLResiduals, g: jax.Array) -> _KLInputs:
    temperature = inp.temperature
    x = _scaled(inp.logits.astype(res.log_sum.dtype), temperature)
    # d(T^2 KL(x/T))/dx = T dKL/d(x/T); the T^2 and 1/T cancel to T.
    g_t = g if temperature is None else g * temperature
    p, log_p = _log_targets(cfg, inp, res.log_sum.dtype)
    log_q = x - res.shift - res.log_sum
    q = jnp.exp(log_q)
    # dKL/dx_c = (sum_j p_j) q_c - p_c.
    dx = g_t * (q if res.p_sum is None else res.p_sum * q) - g_t * p
    log_ratio = log_p - where_mass(p, log_q)
    d_temperature = None
    if cfg.targets == _PROBS:
        # log p - log q + 1 where p > 0; 0 where p == 0 (see kl_divergence).
        dt = where_mass(p, g_t * (log_ratio + 1))
    elif cfg.targets == _LOG_PROBS:
        dt = where_mass(p, g_t * p * (log_ratio + 1))
    else:
        # Through p = softmax(t/T): dKL/du_c = p_c (log p_c - log q_c - KL).
        dt = where_mass(p, g_t * p * (log_ratio - res.kl))
        if temperature is not None:
            # d(T^2 KL)/dT = T [2 KL - sum_c (q_c - p_c) log q_c - sum_c p_c (log p_c -
            # log q_c - KL) log p_c]: the logits enter as x/T and t/T, and centring them by
            # their log-normalisers changes neither sum (each weight sums to 0 over c).
            centred = jnp.sum(
                _numerics.times(q - p, log_q) + where_mass(p, p * (log_ratio - res.kl) * log_p),
                cfg.axis,
                keepdims=True,
            )
            d_temperature = g * temperature * (2 * res.kl - centred)
    return cotangents(inp, logits=dx, targets=dt, temperature=d_temperature)


_soft_kl = per_example_rule(_soft_kl_fwd, _soft_kl_bwd)


class _JSInputs(NamedTuple):
    logits: jax.Array  # the student's: q = softmax(x / T)
    teacher: jax.Array  # p = softmax(t / T)
    beta: Any  # the teacher's weight in the mixture m = beta p + (1 - beta) q
    temperature: Any  # as in _KLInputs


class _JSResiduals(NamedTuple):
    q_shift: jax.Array  # of x / T
    q_log_sum: jax.Array
    p_shift: jax.Array  # of t / T
    p_log_sum: jax.Array
    kl_qm: jax.Array  # KL(q || m)
    kl_pm: jax.Array  # KL(p || m)


def _js_fwd(cfg: _Config, inp: _JSInputs) -> tuple[jax.Array, _JSResiduals]:
    dtype = _checks.compute_dtype(inp.logits.dtype, inp.teacher.dtype)
    x = _scaled(inp.logits.astype(dtype), inp.temperature)
    u = _scaled(inp.teacher.astype(dtype), inp.temperature)
    q_norm, p_norm = _numerics.log_normaliser(x, cfg.axis), _numerics.log_normaliser(u, cfg.axis)
    (q, log_q), (p, log_p) = _numerics.normalised(x, *q_norm), _numerics.normalised(u, *p_norm)
    log_qm, log_pm = _numerics.mixture_log_ratios(q, log_q, p, log_p, inp.beta)
    kl_qm = jnp.sum(q * log_qm, cfg.axis, keepdims=True)
    kl_pm = jnp.sum(p * log_pm, cfg.axis, keepdims=True)
    js = inp.beta * kl_pm + (1 - inp.beta) * kl_qm
    loss = js if inp.temperature is None else js * inp.temperature**2
    return loss, _JSResiduals(*q_norm, *p_norm, kl_qm, kl_pm)


def _js_bwd(cfg: _Config, inp: _JSInputs, res: _JSResiduals, g: jax.Array) -> _JSInputs:
    beta, temperature = inp.beta, inp.temperature
    dtype = res.q_log_sum.dtype
    x = _scaled(inp.logits.astype(dtype), temperature)
    u = _scaled(inp.teacher.astype(dtype), temperature)
    q, log_q = _numerics.normalised(x, res.q_shift, res.q_log_sum)
    p, log_p = _numerics.normalised(u, res.p_shift, res.p_log_sum)
    log_qm, log_pm = _numerics.mixture_log_ratios(q, log_q, p, log_p, beta)
    # J = beta sum p log p + (1 - beta) sum q log q - sum m log m: the log m terms cancel in
    # dJ/dq_c = (1 - beta) log(q_c / m_c), so through the softmax
    # dJ/dx_c = (1 - beta) q_c (log(q_c / m_c) - KL(q || m)); likewise for the teacher.
    dj_dx = (1 - beta) * where_mass(q, q * (log_qm - res.kl_qm))
    dj_du = beta * where_mass(p, p * (log_pm - res.kl_pm))
    # dJ/dbeta = sum p log p - sum q log q - sum (p - q)(log m + 1) = KL(p || m) - KL(q || m).
    d_beta = g * (res.kl_pm - res.kl_qm)
    if temperature is None:
        return cotangents(inp, logits=g * dj_dx, teacher=g * dj_du, beta=d_beta)
    # d(T^2 J)/dT = T [2 J - sum_c dJ/dx_c log q_c - sum_c dJ/du_c log p_c]: x = s / T and
    # u = t / T, centred by their log-normalisers (each dJ/d. sums to 0 over c).
    js = beta * res.kl_pm + (1 - beta) * res.kl_qm
    centred = jnp.sum(dj_dx * log_q + dj_du * log_p, cfg.axis, keepdims=True)
    d_temperature = g * temperature * (2 * js - centred)
    g_t = g * temperature  # d(T^2 J(x / T))/dx = T dJ/d(x / T)
    return cotangents(
        inp,
        logits=g_t * dj_dx,
        teacher=g_t * dj_du,
        beta=d_beta * temperature**2,
        temperature=d_temperature,
    )


_js = per_example_rule(_js_fwd, _js_bwd)


def _forward_kl(
    cfg: _Config,
    mask: jax.Array,
    student: jax.Array,
    teacher: jax.Array,
    temperature: Any,
    example_weights: jax.Array | None = None,
):
    """T^2 KL(p || q) per example, p the teacher's: `distillation_loss`'s rule."""
    return _soft_kl(cfg, mask, None, _KLInputs(student, teacher, temperature), example_weights)


def _reverse_kl(
    cfg: _Config,
    mask: jax.Array,
    student: jax.Array,
    teacher: jax.Array,
    temperature: Any,
    example_weights: jax.Array | None = None,
):
    """T^2 KL(q || p) per example: the same rule with the student's logits as the targets."""
    return _soft_kl(cfg, mask, None, _KLInputs(teacher, student, temperature), example_weights)


def _generalised_js(
    cfg: _Config,
    mask: jax.Array,
    student: jax.Array,
    teacher: jax.Array,
    beta: Any,
    temperature: Any,
    example_weights: jax.Array | None = None,
) -> jax.Array:
    """Per-example generalised JSD, and exactly the forward and reverse KL at beta = 0 and 1."""
    if beta is None:  # a concrete 0: the forward KL is the whole program
        return _forward_kl(cfg, mask, student, teacher, temperature, example_weights)
    # Any other beta arrives traced (a schedule compiles once), so the endpoints, where the
    # divergence jumps from 0 to a KL, are chosen at run time; only the chosen branch runs.
    branches = [
        lambda m, s, t, b, temp, v: _js(cfg, m, None, _JSInputs(s, t, b, temp), v),
        lambda m, s, t, b, temp, v: _forward_kl(cfg, m, s, t, temp, v),
        lambda m, s, t, b, temp, v: _reverse_kl(cfg, m, s, t, temp, v),
    ]
    index = jnp.where(beta == 0, 1, jnp.where(beta == 1, 2, 0))
    operands = (mask, student, teacher, beta, temperature, example_weights)
    return lax.switch(index, branches, *operands)


class _EntropyInputs(NamedTuple):
    logits: jax.Array


class _EntropyResiduals(NamedTuple):
    shift: jax.Array
    log_sum: jax.Array
    entropy: jax.Array


def _entropy_fwd(cfg: _Config, inp: _EntropyInputs) -> tuple[jax.Array, _EntropyResiduals]:
    x = inp.logits.astype(_checks.compute_dtype(inp.logits.dtype))
    shift, log_sum = _numerics.log_normaliser(x, cfg.axis)
    log_q = x - shift - log_sum
    q = jnp.exp(log_q)
    h = -jnp.sum(where_mass(q, q * where_mass(q, log_q)), cfg.axis, keepdims=True)
    return h, _EntropyResiduals(shift, log_sum, h)


def _entropy_bwd(
    cfg: _Config, inp: _EntropyInputs, res: _EntropyResiduals, g: jax.Array
) -> _EntropyInputs:
    log_q = inp.logits.astype(res.log_sum.dtype) - res.shift - res.log_sum
    q = jnp.exp(log_q)
    # dH/dx_c = -q_c (log q_c + H).
    return cotangents(inp, logits=where_mass(q, -g * q * (where_mass(q, log_q) + res.entropy)))


_entropy = per_example_rule(_entropy_fwd, _entropy_bwd)


def _prepare(
    logits: ArrayLike,
    targets: ArrayLike | None,
    axis: int,
    where: ArrayLike | None,
    *,
    logits_name: str,
    targets_name: str,
) -> tuple[jax.Array, jax.Array | None, int, jax.Array]:
    logits = _checks.floating(logits_name, logits)
    axis = _checks.class_axis(axis, logits.ndim, name=logits_name)
    example_shape = _checks.without_axis(logits.shape, axis)
    mask = _checks.example_mask(where, example_shape)
    if targets is None:
        return logits, None, axis, mask
    targets = _checks.floating(targets_name, targets)
    _checks.same_shape(targets_name, targets, logits.shape, f"the shape of {logits_name}")
    return logits, targets, axis, mask


@entry_point(static=("axis", "log_targets", "reduction"), checks={"log_targets": _checks.flag})
def kl_divergence(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    axis: int = -1,
    log_targets: bool = False,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Kullback-Leibler divergence from `softmax(logits)` to target probabilities.

    With $q = \operatorname{softmax}(x)$ over `axis` and targets $p$, the loss
    of example $i$ is

    $$
    \ell_i = \mathrm{KL}(p_i \,\|\, q_i) = \sum_c p_{ic}\,(\log p_{ic} - \log q_{ic}),
    \qquad 0 \log 0 = 0,
    $$

    and `"mean"` is $\sum_i m_i v_i \ell_i / \sum_i m_i v_i$ over the examples
    that `where` keeps, with example weights $v_i$ (1 if not given):
    PyTorch's `kl_div(log_softmax(x), p, reduction="batchmean")`
    for 2-D inputs. (For inputs with more dimensions jaxce averages over every
    example position, PyTorch's `"batchmean"` divides by the first dimension
    only.) `"none"` gives one value per example, already summed over classes,
    where PyTorch's `"none"` is elementwise.

    A class with target 0 contributes nothing, also where its logit is `-inf`:
    the loss stays finite and that class's gradient is exactly 0 (PyTorch
    gives NaN there). A target with mass on a `-inf` logit gives `+inf`, as
    it should. With `log_targets=True` a target of `-inf` is a zero
    probability (PyTorch gives NaN there too).

    The gradient is analytic (a `jax.custom_vjp`) and differentiable again:
    w.r.t. the logits it is $(\sum_c p_{ic})\,q_i - p_i$ (so it is exact for
    unnormalised targets too); w.r.t. probability targets it is
    $\log p_{ic} - \log q_{ic} + 1$, and w.r.t. log-targets
    $p_{ic}(\log p_{ic} - \log q_{ic} + 1)$. At $p_{ic} = 0$ the one-sided
    derivative w.r.t. a probability target is $-\infty$; jaxce returns 0
    there (PyTorch returns NaN), which keeps gradients that flow on into
    the targets finite (a softmax producing $p_{ic} = 0$ has zero Jacobian
    there anyway). For log-targets the limit 0 is exact. W.r.t. the example
    weights it is exact too. Forward mode (`jax.jvp`, `jax.jacfwd`) takes
    `autodiff="forward"`.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`.
      targets: floating array of the logits' shape: probabilities, or
        log-probabilities if `log_targets` is True. Rows need not be
        normalised; negative probabilities give NaN.
      axis: the class axis.
      log_targets: whether `targets` holds log-probabilities (PyTorch's
        `log_target`), which is more accurate for tiny probabilities.
      where: boolean mask broadcastable to the examples' shape (the logits'
        shape without `axis`); False excludes an example.
      reduction: `"mean"` (per example), `"sum"` or `"none"` (per example,
        0 where excluded). If no example is kept, the mean is 0 with zero
        gradient.
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's divergence and its share of the `"mean"`
        denominator; 0 is `where=False` (exactly 0; its derivative is its loss).
        Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example values of shape `logits.shape` without `axis`
      for `"none"`; float32 for half-precision inputs, otherwise the widest
      input floating type.

    Raises:
      TypeError: non-floating `logits`, `targets` or `example_weights`, a
        non-bool `log_targets`, a non-boolean `where`.
      ValueError: `targets` not of the logits' shape, a bad `axis`, a `where`
        or `example_weights` that does not broadcast, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, -jnp.inf]])
      >>> targets = jnp.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.kl_divergence(logits, targets, reduction="none"))
      ...     log_targets = jnp.log(targets)
      ...     print(jaxce.kl_divergence(logits, log_targets, log_targets=True, reduction="none"))
      ...     print(f"{jaxce.kl_divergence(logits, targets):.4f}")
      [0.0052 1.8136]
      [0.0052 1.8136]
      0.9094
    """
    x, t, axis, mask = _prepare(
        logits, targets, axis, where, logits_name="logits", targets_name="targets"
    )
    assert t is not None
    v = _labels.per_example_weights(example_weights, mask.shape)
    cfg = _Config(axis, _LOG_PROBS if log_targets else _PROBS)
    losses = _soft_kl(cfg, mask, None, _KLInputs(x, t, None), v)
    return reduce_loss(losses, _labels.weighted_count(mask, v, losses.dtype), reduction)


@entry_point(static=("axis", "reduction"))
def entropy(
    logits: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "none",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Shannon entropy of `softmax(logits)`, in nats.

    $$
    H_i = -\sum_c q_{ic} \log q_{ic}, \qquad q_i = \operatorname{softmax}(x_i),
    \qquad 0 \log 0 = 0.
    $$

    A statistic rather than a loss, so the default reduction is `"none"`
    (one value per example); `"mean"` averages over the examples `where`
    keeps, $\sum_i m_i v_i H_i / \sum_i m_i v_i$ with example weights $v_i$.
    The entropy lies in $[0, \log K]$, $\log K$ for equal logits.

    The gradient is analytic (a `jax.custom_vjp`, differentiable again):
    differentiating $-\sum_c q_c \log q_c$ through
    $\partial q_c / \partial x_j = q_c(\delta_{cj} - q_j)$ gives

    $$
    \frac{\partial H}{\partial x_j} = -q_j\,(\log q_j + H),
    $$

    which is exactly 0 at a `-inf` logit (a masked class). Maximising it is
    the usual entropy bonus. Forward mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: floating array with the classes on `axis`.
      axis: the class axis.
      where: boolean mask broadcastable to the examples' shape; False gives 0
        and excludes the example from `"mean"`.
      reduction: `"none"` (default), `"mean"` or `"sum"`.
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's entropy (also for `"none"`) and its share of
        the `"mean"` denominator, with an exact gradient; 0 is `where=False`.
        Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      Per-example entropies (shape of `logits` without `axis`), or a scalar;
      float32 for half-precision logits.

    Raises:
      TypeError: non-floating `logits` or `example_weights`, a non-boolean
        `where`.
      ValueError: a bad `axis`, a `where` or `example_weights` that does not
        broadcast, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, -jnp.inf]])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.entropy(logits))
      ...     print(f"{jaxce.entropy(logits, reduction='mean'):.4f}")
      [1.3863 0.1773]
      0.7818
    """
    logits, _, axis, mask = _prepare(
        logits, None, axis, where, logits_name="logits", targets_name=""
    )
    v = _labels.per_example_weights(example_weights, mask.shape)
    losses = _entropy(_Config(axis), mask, None, _EntropyInputs(logits), v)
    return reduce_loss(losses, _labels.weighted_count(mask, v, losses.dtype), reduction)


@entry_point(
    static=("axis", "reduction"),
    hyperparameters={"temperature": _checks.POSITIVE},
    off={"temperature": 1.0},  # divides by nothing
)
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Knowledge-distillation loss: temperature-scaled KL from the teacher to the student.

    With $p = \operatorname{softmax}(t/T)$ (teacher) and
    $q = \operatorname{softmax}(s/T)$ (student) over `axis`,

    $$
    \ell_i = T^2\, \mathrm{KL}(p_i \,\|\, q_i) = T^2 \sum_c p_{ic}\,(\log p_{ic} - \log q_{ic}),
    $$

    averaged over the examples `where` keeps for `"mean"`, each weighted by
    its example weight $v_i$: $\sum_i m_i v_i \ell_i / \sum_i m_i v_i$. The $T^2$ factor
    keeps the gradient's scale independent of $T$ (Hinton et al.). At
    $T = 1$ this is `kl_divergence(s, softmax(t))`; it equals PyTorch's
    `T**2 * kl_div(log_softmax(s / T), softmax(t / T), reduction="batchmean")`.

    The gradient is analytic (a `jax.custom_vjp`, differentiable again):
    $T(q_i - p_i)$ w.r.t. the student logits and
    $T\, p_{ic}(\log p_{ic} - \log q_{ic} - \mathrm{KL}_i)$ w.r.t. the teacher
    logits, which is exact although usually discarded with
    `jax.lax.stop_gradient(teacher_logits)`. A class whose teacher logit is
    `-inf` contributes nothing and gets zero gradient for both, also where
    the student logit is `-inf` too.

    `temperature` may be a Python number or a traced scalar: a schedule
    compiles once, and a learned temperature gets its exact gradient,
    $T\big[2\,\mathrm{KL}_i - \sum_c (q_{ic} - p_{ic})\log q_{ic}
    - \sum_c p_{ic}(\log p_{ic} - \log q_{ic} - \mathrm{KL}_i)\log p_{ic}\big]$
    per example. Forward mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      student_logits: floating array with the classes on `axis`.
      teacher_logits: floating array of the same shape.
      temperature: $T > 0$, a Python number or a traced scalar (NaN, and a
        `checkify` error naming it, if a traced value is not positive).
      axis: the class axis.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example.
      reduction: `"mean"` (per example), `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's loss and its share of the `"mean"`
        denominator, with an exact gradient; 0 is `where=False` (exactly 0;
        its derivative is its loss). Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      inputs, otherwise the widest input floating type.

    Raises:
      TypeError: non-floating logits or `example_weights`, a non-numeric
        `temperature`, a non-boolean `where`.
      ValueError: a concrete `temperature <= 0` or not finite, mismatched shapes, a bad
        `axis`, a `where` or `example_weights` that does not broadcast, an
        unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> student = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]])
      >>> teacher = jnp.array([[3.0, 0.5, 0.0], [0.5, 4.0, 1.0]])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.distillation_loss(student, teacher, reduction="none"))
      ...     print(jaxce.distillation_loss(student, teacher, temperature=4.0, reduction="none"))
      ...     print(f"{jaxce.distillation_loss(student, teacher, temperature=4.0):.4f}")
      [0.136  0.0628]
      [0.2259 0.342 ]
      0.2839

    References:
      Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
      Network", 2015. https://arxiv.org/abs/1503.02531
    """
    student, teacher, axis, mask = _prepare(
        student_logits,
        teacher_logits,
        axis,
        where,
        logits_name="student_logits",
        targets_name="teacher_logits",
    )
    assert teacher is not None
    v = _labels.per_example_weights(example_weights, mask.shape)
    inputs = _KLInputs(student, teacher, temperature)
    losses = _soft_kl(_Config(axis, _LOGITS), mask, None, inputs, v)
    return reduce_loss(losses, _labels.weighted_count(mask, v, losses.dtype), reduction)


def _prepare_pair(
    logits: ArrayLike, teacher_logits: ArrayLike, axis: int, where: ArrayLike | None
) -> tuple[_Config, jax.Array, jax.Array, jax.Array]:
    student, teacher, axis, mask = _prepare(
        logits, teacher_logits, axis, where, logits_name="logits", targets_name="teacher_logits"
    )
    assert teacher is not None
    return _Config(axis, _LOGITS), student, teacher, mask


@entry_point(
    static=("axis", "reduction"),
    hyperparameters={"beta": _checks.UNIT, "temperature": _checks.POSITIVE},
    off={"beta": 0.0, "temperature": 1.0},  # beta = 0: the forward KL alone
)
def jensen_shannon_divergence(
    logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    beta: ArrayLike = 0.5,
    temperature: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Generalised Jensen-Shannon divergence between teacher and student, GKD's distillation loss.

    With the student's $q = \operatorname{softmax}(s/T)$ (`logits`), the
    teacher's $p = \operatorname{softmax}(t/T)$ over `axis` and their mixture
    $m = \beta p + (1 - \beta) q$, the loss of example $i$ is

    $$
    \ell_i = T^2 \big[\beta\, \mathrm{KL}(p_i \,\|\, m_i)
      + (1 - \beta)\, \mathrm{KL}(q_i \,\|\, m_i)\big], \qquad 0 < \beta < 1,
    $$

    the symmetric Jensen-Shannon divergence at $\beta = 1/2$. The bracket
    tends to 0 at both ends, so the endpoints are defined apart, as in TRL's
    `generalized_jsd_loss` and Liger-Kernel's JSD: $\beta = 0$ gives exactly
    the forward KL $T^2\,\mathrm{KL}(p_i \,\|\, q_i)$ (`distillation_loss`)
    and $\beta = 1$ exactly the reverse KL $T^2\,\mathrm{KL}(q_i \,\|\, p_i)$
    (`reverse_kl_divergence`). `"mean"` averages over the examples `where`
    keeps (TRL's `"batchmean"`), each weighted by its example weight $v_i$:
    $\sum_i m_i v_i \ell_i / \sum_i m_i v_i$; the $T^2$ factor is Hinton et al.'s, as in
    `distillation_loss` (TRL does not apply it: divide by `temperature**2` to
    compare).

    For $0 < \beta < 1$ the bracket lies in
    $[0, -\beta \log \beta - (1 - \beta) \log (1 - \beta)]$, so a class that
    either model masks with a `-inf` logit gives a finite loss; a class both
    mask contributes nothing. Its `-inf` logit gets exactly zero gradient.

    The gradient is analytic (a `jax.custom_vjp`, differentiable again):
    $T(1 - \beta)\, q_{ic}(\log(q_{ic}/m_{ic}) - \mathrm{KL}(q_i \| m_i))$
    w.r.t. the student logits,
    $T\beta\, p_{ic}(\log(p_{ic}/m_{ic}) - \mathrm{KL}(p_i \| m_i))$ w.r.t.
    the teacher logits (exact, although usually cut with
    `jax.lax.stop_gradient`), and
    $T^2(\mathrm{KL}(p_i \| m_i) - \mathrm{KL}(q_i \| m_i))$ w.r.t. $\beta$
    (each times $v_i$; w.r.t. the example weights, exact too).
    `beta` and `temperature` may be Python numbers or traced scalars, each
    with its exact gradient. A concrete `beta=0` compiles the forward KL alone;
    any other value shares one program that picks the branch at run time, so
    a schedule reaching 0 or 1 compiles once. At the endpoints the loss is a
    KL, which does not depend on $\beta$: its $\beta$-gradient there is 0.
    Forward mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: the student's logits, floating, with the classes on `axis`.
      teacher_logits: the teacher's logits, floating, of the same shape.
      beta: the teacher's weight $\beta \in [0, 1]$ in the mixture, a Python
        number or a traced scalar (NaN, and a `checkify` error naming it, if a
        traced value is outside $[0, 1]$).
      temperature: $T > 0$, a Python number or a traced scalar.
      axis: the class axis.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example.
      reduction: `"mean"` (per example), `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's loss and its share of the `"mean"`
        denominator; 0 is `where=False` (exactly 0; its derivative is its loss).
        Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses (the logits' shape without `axis`) for
      `"none"`; float32 for half-precision inputs, otherwise the widest input
      floating type.

    Raises:
      TypeError: non-floating logits or `example_weights`, a non-numeric
        `beta` or `temperature`, a non-boolean `where`.
      ValueError: a concrete `beta` outside $[0, 1]$, a concrete
        `temperature <= 0`, either not finite, mismatched shapes, a bad
        `axis`, a `where` or `example_weights` that does not broadcast, an
        unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> student = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, -jnp.inf]])
      >>> teacher = jnp.array([[3.0, 0.5, 0.0], [0.5, 4.0, 1.0]])
      >>> jsd = jaxce.jensen_shannon_divergence
      >>> with jnp.printoptions(precision=4):
      ...     print(jsd(student, teacher, reduction="none"))
      ...     print(jsd(student, teacher, beta=1.0, reduction="none"))  # the reverse KL
      ...     print(f"{jsd(student, teacher, beta=0.9, temperature=2.0):.4f}")
      [0.0377 0.0201]
      [0.1789 0.0602]
      0.0474

    References:
      Agarwal et al., "On-Policy Distillation of Language Models: Learning
      from Self-Generated Mistakes", ICLR 2024. https://arxiv.org/abs/2306.13649

      Lin, "Divergence measures based on the Shannon entropy", IEEE
      Transactions on Information Theory 37(1), 1991.
    """
    cfg, student, teacher, mask = _prepare_pair(logits, teacher_logits, axis, where)
    v = _labels.per_example_weights(example_weights, mask.shape)
    losses = _generalised_js(cfg, mask, student, teacher, beta, temperature, v)
    return reduce_loss(losses, _labels.weighted_count(mask, v, losses.dtype), reduction)


@entry_point(
    static=("axis", "reduction"),
    hyperparameters={"temperature": _checks.POSITIVE},
    off={"temperature": 1.0},
)
def reverse_kl_divergence(
    logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Reverse KL divergence from the teacher to the student: KL(student ‖ teacher).

    With the student's $q = \operatorname{softmax}(s/T)$ (`logits`) and the
    teacher's $p = \operatorname{softmax}(t/T)$ over `axis`,

    $$
    \ell_i = T^2\, \mathrm{KL}(q_i \,\|\, p_i) = T^2 \sum_c q_{ic}\,(\log q_{ic} - \log p_{ic}),
    $$

    averaged over the examples `where` keeps for `"mean"`, each weighted by
    its example weight $v_i$: $\sum_i m_i v_i \ell_i / \sum_i m_i v_i$. Where
    `distillation_loss`'s forward KL makes the student cover all of the
    teacher's mass, the reverse KL is mode-seeking: it charges the student
    for mass where the teacher has little (MiniLLM, on-policy distillation).
    It is `distillation_loss(teacher_logits, logits)` with the roles swapped,
    computed by the same rule, and `jensen_shannon_divergence(..., beta=1.0)`;
    it equals PyTorch's `T**2 * kl_div(log_softmax(t / T), log_softmax(s / T),
    log_target=True, reduction="batchmean")`.

    A class whose student logit is `-inf` contributes nothing and gets zero
    gradient for both inputs; student mass on a class the teacher masks with
    `-inf` gives `+inf`, as it should.

    The gradient is analytic (a `jax.custom_vjp`, differentiable again):
    $T\, q_{ic}(\log q_{ic} - \log p_{ic} - \mathrm{KL}_i)$ w.r.t. the
    student logits and $T(p_i - q_i)$ w.r.t. the teacher logits. `temperature`
    may be a Python number or a traced scalar with its exact gradient,
    `distillation_loss`'s with the roles swapped. Forward mode (`jax.jvp`,
    `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: the student's logits, floating, with the classes on `axis`.
      teacher_logits: the teacher's logits, floating, of the same shape.
      temperature: $T > 0$, a Python number or a traced scalar (NaN, and a
        `checkify` error naming it, if a traced value is not positive).
      axis: the class axis.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example.
      reduction: `"mean"` (per example), `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's loss and its share of the `"mean"`
        denominator, with an exact gradient; 0 is `where=False` (exactly 0;
        its derivative is its loss). Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      inputs, otherwise the widest input floating type.

    Raises:
      TypeError: non-floating logits or `example_weights`, a non-numeric
        `temperature`, a non-boolean `where`.
      ValueError: a concrete `temperature <= 0` or not finite, mismatched
        shapes, a bad `axis`, a `where` or `example_weights` that does not
        broadcast, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> student = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, -jnp.inf]])
      >>> teacher = jnp.array([[3.0, 0.5, 0.0], [0.5, 4.0, 1.0]])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.reverse_kl_divergence(student, teacher, reduction="none"))
      ...     print(f"{jaxce.reverse_kl_divergence(student, teacher, temperature=2.0):.4f}")
      [0.1789 0.0602]
      0.5110

    References:
      Gu, Dong, Wei and Huang, "MiniLLM: Knowledge Distillation of Large
      Language Models", ICLR 2024. https://arxiv.org/abs/2306.08543
    """
    cfg, student, teacher, mask = _prepare_pair(logits, teacher_logits, axis, where)
    v = _labels.per_example_weights(example_weights, mask.shape)
    losses = _reverse_kl(cfg, mask, student, teacher, temperature, v)
    return reduce_loss(losses, _labels.weighted_count(mask, v, losses.dtype), reduction)
