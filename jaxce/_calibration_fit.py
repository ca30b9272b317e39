r"""Post-hoc calibration maps fitted on held-out data: temperature and vector scaling.

Both minimise the mean negative log-likelihood of the rescaled logits over the
counted examples with a safeguarded second-order method run for a fixed
number of iterations (`lax.fori_loop`), so they are jit-able, need no
tolerance, and always return finite parameters for finite logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _calibration_bins as _bins
from . import _checks
from ._reduce import safe_divide

# Temperature scaling.


def _nll_derivatives(beta, x, target, mask, n):
    """First and second derivative in beta of the mean NLL of softmax(beta * x).

    With d = x - x_y: f'(beta) = mean_i E_p[d], f''(beta) = mean_i Var_p[d]. The
    centring on x_y makes both exactly 0 for constant logits.
    """
    d = x - target
    z = beta * x
    p = jnp.exp(z - jax.nn.logsumexp(z, axis=-1, keepdims=True))
    # 0 * (-inf) = 0 for masked (-inf) classes.
    pd = jnp.where(p > 0, p * d, 0)
    mean_d = jnp.sum(pd, axis=-1, keepdims=True)
    centred = jnp.where(p > 0, d - mean_d, 0)
    var_d = jnp.sum(p * centred * centred, axis=-1, keepdims=True)
    g = safe_divide(jnp.sum(jnp.where(mask, mean_d, 0)), n)
    h = safe_divide(jnp.sum(jnp.where(mask, var_d, 0)), n)
    return g, h


@functools.partial(
    jax.jit, static_argnames=("axis", "min_temperature", "max_temperature", "num_iterations")
)
def _fit_temperature(logits, labels, where, axis, min_temperature, max_temperature, num_iterations):
    t_min, t_max = min_temperature, max_temperature
    examples = _bins.multiclass(logits, labels, axis, where)
    x = lax.stop_gradient(examples.logits)
    onehot = _bins.one_hot(examples.labels, x.shape[-1])
    target = jnp.sum(jnp.where(onehot, x, 0), axis=-1, keepdims=True)
    m = examples.mask[:, None]
    n = jnp.sum(examples.mask).astype(x.dtype)
    dtype = x.dtype
    lo0, hi0 = jnp.asarray(1 / t_max, dtype), jnp.asarray(1 / t_min, dtype)

    tiny = 16 * jnp.finfo(dtype).eps

    def body(_, state):
        beta, lo, hi, last_step = state
        g, h = _nll_derivatives(beta, x, target, m, n)
        # f is convex: f'(beta) > 0 puts the minimiser below beta, < 0 above it.
        lo = jnp.where(g <= 0, beta, lo)
        hi = jnp.where(g >= 0, beta, hi)
        newton = beta - g / h
        step = jnp.abs(newton - beta)
        # Newton must stay in the bracket and at least halve the step (or be at
        # rounding level, once converged); otherwise bisect the bracket in log space.
        use_newton = (
            jnp.isfinite(newton)
            & (newton >= lo)
            & (newton <= hi)
            & (step <= jnp.maximum(last_step / 2, tiny * beta))
        )
        new_beta = jnp.where(use_newton, newton, jnp.sqrt(lo * hi))
        return new_beta, lo, hi, jnp.abs(new_beta - beta)

    beta0 = jnp.clip(jnp.asarray(1, dtype), lo0, hi0)
    beta = lax.fori_loop(0, num_iterations, body, (beta0, lo0, hi0, hi0 - lo0))[0]
    t = 1 / jnp.clip(beta, lo0, hi0)
    # The minimiser sits on a bound when f' keeps one sign over the whole range
    # (f' == 0 throughout, as for constant logits, keeps T = 1).
    g_lo, _ = _nll_derivatives(lo0, x, target, m, n)
    g_hi, _ = _nll_derivatives(hi0, x, target, m, n)
    t = jnp.where((g_hi <= 0) & (g_lo < 0), jnp.asarray(t_min, dtype), t)
    t = jnp.where((g_lo >= 0) & (g_hi > 0), jnp.asarray(t_max, dtype), t)
    return jnp.where(jnp.any(examples.bad), jnp.nan, t)


def fit_temperature(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
    num_iterations: int = 50,
) -> jax.Array:
    r"""Temperature scaling: the $T > 0$ minimising the mean NLL of `softmax(logits / T)`.

    $$
    T^\star = \arg\min_{T_{\min} \le T \le T_{\max}} \frac{1}{n}\sum_i m_i
        \Big[\operatorname{lse}(x_i / T) - x_{i y_i} / T\Big]
    $$

    The objective is convex in $\beta = 1/T$, with $f'(\beta) =
    \overline{\mathbb{E}_{p}[x] - x_y}$ and $f''(\beta) = \overline{\operatorname{Var}_p[x]}$
    ($p = \operatorname{softmax}(\beta x)$). The solver keeps a bracket in $\beta$
    and takes a Newton step when it stays inside the bracket and at least
    halves the previous step, otherwise a geometric bisection of the bracket,
    for a fixed `num_iterations` (a `lax.fori_loop`): it always converges and
    the result is always finite and within the bounds.

    Edge cases: when every counted prediction is right and confident the NLL
    keeps falling as $T \to 0$, and the result is `min_temperature`; when the
    labels are anti-correlated with the logits (e.g. every label is the
    least likely class) the optimum is $T \to \infty$ and the result is
    `max_temperature`. Logits that carry no information (constant rows, a
    single class) or no counted example give $T = 1$.

    Fit on held-out data (a validation split), then evaluate with
    `softmax(logits, temperature=T)` or `softmax_cross_entropy(logits / T,
    labels)`.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`; `-inf`
        marks a masked class.
      labels: integer class indices, shape = logits shape without `axis`.
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape.
      min_temperature: lower bound $T_{\min} > 0$.
      max_temperature: upper bound $T_{\max} > T_{\min}$.
      num_iterations: solver iterations (static). Newton usually converges in
        under ten; 50 reach float32 precision over the default bounds even by
        bisection alone.

    Returns:
      A scalar $T$: float32 for half-precision logits, otherwise the logits'
      dtype. NaN if a counted label lies outside `[0, K)`.

    Raises:
      TypeError: integer logits, non-integer labels, a non-boolean `where`.
      ValueError: mismatched shapes, bounds not with $0 < T_{\min} < T_{\max}$,
        `num_iterations < 1`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0]])
      >>> labels = jnp.array([0, 1, 2, 1])
      >>> t = jaxce.fit_temperature(logits, labels)
      >>> print(f"{t:.4f}")
      2.2324
      >>> nll = jaxce.softmax_cross_entropy(logits, labels)
      >>> print(f"{nll:.4f} -> {jaxce.softmax_cross_entropy(logits / t, labels):.4f}")
      1.0360 -> 0.7356

    References:
      Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
      Networks", ICML 2017.
    """
    t_min = _checks.POSITIVE.static("min_temperature", min_temperature)
    t_max = _checks.POSITIVE.static("max_temperature", max_temperature)
    if not t_min < t_max:
        raise ValueError(f"max_temperature must be > min_temperature = {t_min}; got {t_max}.")
    return _fit_temperature(
        logits,
        labels,
        where,
        _checks.integer("axis", axis),
        t_min,
        t_max,
        _checks.positive_integer("num_iterations", num_iterations),
    )


# Vector scaling.

_STEPS = 12  # line-search candidates 1, 1/2, ..., 2^-11 of the Newton step


def _scaled_logits(theta: jax.Array, x: jax.Array, finite: jax.Array) -> jax.Array:
    """`x * scale + bias` per class; a `-inf` logit (a masked class) stays `-inf`."""
    return jnp.where(finite, x * theta[0][None, :] + theta[1][None, :], -jnp.inf)


def _newton_system(theta, x, finite, onehot, weight):
    """Gradient `(2K,)` and Hessian `(2K, 2K)` of the weighted mean NLL in `(scale, bias)`.

    With z = x * s + b and p = softmax(z), per example the NLL has gradient
    (p - y) in z and Hessian diag(p) - p p^T; the chain rule through dz/ds = x,
    dz/db = 1 gives the blocks below, each a K x K matrix product.
    """
    p = jax.nn.softmax(_scaled_logits(theta, x, finite), axis=-1)
    residual = weight * (p - onehot.astype(p.dtype))
    gradient = jnp.concatenate([jnp.sum(residual * x, axis=0), jnp.sum(residual, axis=0)])
    ones = jnp.ones_like(x)

    def block(u, v):  # u, v: dz/d(parameter) per class, x for a scale and 1 for a bias
        return jnp.diag(jnp.sum(weight * p * u * v, axis=0)) - (p * u).T @ (weight * p * v)

    hessian = jnp.block([[block(x, x), block(x, ones)], [block(ones, x), block(ones, ones)]])
    return gradient, hessian


@functools.partial(jax.jit, static_argnames=("axis", "num_iterations"))
def _fit_vector_scaling(logits, labels, where, axis, num_iterations):
    examples = _bins.multiclass(logits, labels, axis, where)
    raw = lax.stop_gradient(examples.logits)
    dtype, num_classes = raw.dtype, raw.shape[-1]
    counted = examples.mask[:, None]
    # A -inf logit marks a masked class; masked examples read as zeros, whatever they hold.
    finite = jnp.isfinite(raw) | ~counted
    x = jnp.where(counted & jnp.isfinite(raw), raw, 0)
    onehot = _bins.one_hot(examples.labels, num_classes)
    n = jnp.sum(examples.mask).astype(dtype)
    weight = safe_divide(examples.mask.astype(dtype), n)[:, None]
    steps = 0.5 ** jnp.arange(_STEPS, dtype=dtype)

    def nll(theta):
        z = _scaled_logits(theta, x, finite)
        lse = jax.nn.logsumexp(z, axis=-1)
        target = jnp.sum(jnp.where(onehot, z, 0), axis=-1)
        return safe_divide(jnp.sum(jnp.where(examples.mask, lse - target, 0)), n)

    def body(_, state):
        theta, value = state
        gradient, hessian = _newton_system(theta, x, finite, onehot, weight)
        # Jacobi scaling keeps scale and bias comparable for logits of any size; the
        # small ridge makes the system regular along the directions the NLL ignores
        # (a common shift of the biases, classes that are always masked).
        diagonal = jnp.diag(hessian)
        usable = diagonal > jnp.finfo(dtype).tiny * 1e6
        d = jnp.where(usable, lax.rsqrt(jnp.where(usable, diagonal, 1)), 1)
        scaled = d[:, None] * hessian * d[None, :] + 1e-6 * jnp.eye(2 * num_classes, dtype=dtype)
        direction = (d * jnp.linalg.solve(scaled, -d * gradient)).reshape(2, num_classes)
        # Safeguard: the best of the step lengths 1, 1/2, ..., kept only if the NLL does not
        # rise. Near the optimum the decrease falls below the NLL's rounding while the
        # gradient is still accurate, so an equal NLL lets Newton finish converging.
        # One candidate at a time (lax.map): memory stays at one N x K array.
        values = lax.map(lambda t: nll(theta + t * direction), steps)
        values = jnp.where(jnp.isnan(values), jnp.inf, values)
        best = jnp.argmin(values)
        better = (values[best] <= value) & jnp.isfinite(values[best])
        theta = jnp.where(better, theta + steps[best] * direction, theta)
        return theta, jnp.where(better, values[best], value)

    identity = jnp.stack([jnp.ones(num_classes, dtype), jnp.zeros(num_classes, dtype)])
    theta, _ = lax.fori_loop(0, num_iterations, body, (identity, nll(identity)))
    # Classes with no finite logit keep the identity; biases are centred (softmax
    # ignores a common shift).
    present = jnp.any(finite & counted, axis=0)
    theta = jnp.where(present[None, :], theta, identity)
    shift = safe_divide(jnp.sum(jnp.where(present, theta[1], 0)), jnp.sum(present).astype(dtype))
    scale, bias = theta[0], jnp.where(present, theta[1] - shift, 0)
    bad = jnp.any(examples.bad)
    return jnp.where(bad, jnp.nan, scale), jnp.where(bad, jnp.nan, bias)


def fit_vector_scaling(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    num_iterations: int = 30,
) -> tuple[jax.Array, jax.Array]:
    r"""Vector scaling: per-class `scale` and `bias` minimising the NLL of `logits * scale + bias`.

    $$
    (s^\star, b^\star) = \arg\min_{s, b \in \mathbb{R}^K} \frac{1}{n} \sum_i m_i
        \Big[\operatorname{lse}(s \odot x_i + b) - (s_{y_i} x_{i y_i} + b_{y_i})\Big]
    $$

    Guo et al.'s vector scaling: $2K$ parameters instead of temperature
    scaling's one, so it can also correct per-class biases (and, unlike
    temperature scaling, change the argmax). The objective is convex in
    $(s, b)$. The solver starts from the identity ($s = 1$, $b = 0$) and, for
    a fixed `num_iterations` (a `lax.fori_loop`), takes a Newton step with the
    exact Hessian (Jacobi-scaled, with a $10^{-6}$ ridge for the directions
    the NLL ignores), tries the step lengths $1, \tfrac12, \dots, 2^{-11}$ and
    keeps the best only if it does not raise the NLL. So the fitted map never
    increases the NLL of the data it was fitted on. Each iteration costs
    $O(NK^2 + K^3)$.

    The biases are centred (softmax ignores a common shift: $\sum_k b_k = 0$
    over the classes that have a finite logit); a class whose logit is `-inf`
    in every counted example keeps $s_k = 1$, $b_k = 0$. When the data are
    separable the NLL keeps falling as the scales grow, and the result is
    wherever `num_iterations` Newton steps lead. Fit on held-out data.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`; `-inf`
        marks a masked class (it stays `-inf` after scaling).
      labels: integer class indices, shape = logits shape without `axis`.
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape.
      num_iterations: Newton iterations (static).

    Returns:
      `(scale, bias)`, each `(K,)`: float32 for half-precision logits,
      otherwise the logits' dtype. Apply along the class axis (for `axis=-1`,
      `logits * scale + bias`). The identity when no example counts (also for
      an empty batch); NaN if a counted label lies outside `[0, K)`.

    Raises:
      TypeError: integer logits, non-integer labels, a non-boolean `where`, a
        non-integer `num_iterations`.
      ValueError: mismatched shapes, `num_iterations < 1`.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> key_logits, key_labels = jax.random.split(jax.random.key(0))
      >>> z = jax.random.normal(key_logits, (1000, 3))
      >>> labels = jax.random.categorical(key_labels, z + jnp.array([[0.5, 0.0, -0.5]]))
      >>> logits = 3.0 * z  # over-confident, and blind to the class prior
      >>> scale, bias = jaxce.fit_vector_scaling(logits, labels)
      >>> with jnp.printoptions(precision=2):
      ...     print(scale, bias)
      [0.29 0.32 0.3 ] [ 0.41 -0.02 -0.39]
      >>> nll = jaxce.softmax_cross_entropy(logits, labels)
      >>> scaled = logits * scale[None] + bias[None]
      >>> print(f"{nll:.4f} -> {jaxce.softmax_cross_entropy(scaled, labels):.4f}")
      1.3319 -> 0.8694

    References:
      Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
      Networks", ICML 2017.
    """
    return _fit_vector_scaling(
        logits,
        labels,
        where,
        _checks.integer("axis", axis),
        _checks.positive_integer("num_iterations", num_iterations),
    )
