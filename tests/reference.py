"""Float64 NumPy oracles written from the formulas; they share no code with jaxce."""

import numpy as np


def log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def probabilities(log_p):
    """`exp(log_p)`, with subnormal results 0.

    XLA on a CPU flushes subnormal results to 0; so does the oracle, so that the two agree
    on which probabilities are exactly 0 (e^-720 is one: 0 log 0 = 0, not a KL of inf).
    """
    p = np.exp(log_p)
    return np.where(p < np.finfo(np.float64).tiny, 0.0, p)


def softmax(x, axis=-1):
    return probabilities(log_softmax(x, axis))


def where_of(where, shape):
    """The mask `where` as booleans of the examples' shape (all True where not given)."""
    return np.ones(shape, bool) if where is None else np.broadcast_to(where, shape)


def example_weights_of(example_weights, shape):
    """The example weights v as float64 of the examples' shape (1 where not given)."""
    if example_weights is None:
        return np.ones(shape)
    return np.broadcast_to(np.asarray(example_weights, np.float64), shape)


def masked_reduce(losses, where, reduction, example_weights=None):
    """Every entry of `losses` is an example; `where` False or a weight v of 0 drops it.

    A weight multiplies the example's loss and its count in the mean's denominator.
    """
    mask = where_of(where, losses.shape)
    v = example_weights_of(example_weights, losses.shape)
    mask = mask & (v != 0)
    with np.errstate(invalid="ignore"):
        weighted = np.where(mask, v * np.where(mask, losses, 0.0), 0.0)
    return reduce(weighted, np.where(mask, v, 0.0), reduction)


def reduce(losses, norm, reduction):
    """ "none", "sum", or the sum over the total of `norm` (0 when nothing counts)."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    norm = np.sum(norm)
    return 0.0 if norm == 0 else losses.sum() / norm


def softmax_cross_entropy(
    logits,
    labels,
    *,
    axis=-1,
    weights=None,
    ignore_index=None,
    label_smoothing=0.0,
    where=None,
    reduction="mean",
    z_loss=0.0,
    example_weights=None,
):
    """Loops over examples in float64 with the class axis moved last.

    An example weight v multiplies the example's loss and its share of the
    normaliser; v = 0 skips the example like `where` False.
    """
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    k = x.shape[-1]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    labels = np.asarray(labels)
    probs = np.issubdtype(labels.dtype, np.floating)
    if probs:
        labels = np.moveaxis(labels.astype(np.float64), axis, -1)
    example_shape = x.shape[:-1]
    mask = where_of(where, example_shape)
    v = example_weights_of(example_weights, example_shape)
    losses = np.zeros(example_shape)
    norm = np.zeros(example_shape)
    eps = label_smoothing
    for idx in np.ndindex(*example_shape):
        if v[idx] == 0:
            continue
        row = x[idx]
        finite = row > -np.inf
        lse = np.log(np.sum(np.exp(row[finite] - row[finite].max()))) + row[finite].max()
        neg_logq = lse - row  # +inf at -inf logits
        if probs:
            p = labels[idx]
            q = (1 - eps) * p + np.where(finite, eps / finite.sum(), 0.0)
            terms = np.where(q != 0, w * q * np.where(q != 0, neg_logq, 0.0), 0.0)
            loss, n = terms.sum(), 1.0
        else:
            y = int(labels[idx])
            if ignore_index is not None and y == ignore_index:
                continue
            if not 0 <= y < k:
                loss, n = np.nan, 0.0
            else:
                smooth = np.sum(np.where(finite, w * np.where(finite, neg_logq, 0.0), 0.0))
                loss = (1 - eps) * w[y] * neg_logq[y] + eps / finite.sum() * smooth
                n = w[y]
        if not mask[idx]:
            continue
        losses[idx] = v[idx] * (loss + z_loss * lse**2)
        norm[idx] = v[idx] * n
    return reduce(losses, norm, reduction)


def linear_softmax_cross_entropy(
    hidden, kernel, labels, *, bias=None, kernel_layout="DV", **options
):
    """`softmax_cross_entropy` of the logits `hidden @ kernel + bias`, kernel `(D, V)` (or
    `(V, D)`, transposed)."""
    kernel = np.asarray(kernel, np.float64)
    logits = np.asarray(hidden, np.float64) @ (kernel if kernel_layout == "DV" else kernel.T)
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    return softmax_cross_entropy(logits, labels, **options)


def nll_loss(
    log_probs,
    labels,
    *,
    weights=None,
    ignore_index=None,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """-v_i w_{y_i} log q_{i y_i} over the counted examples, class axis last."""
    lp = np.asarray(log_probs, np.float64)
    labels = np.asarray(labels)
    w = np.ones(lp.shape[-1]) if weights is None else np.asarray(weights, np.float64)
    mask = where_of(where, labels.shape)
    v = example_weights_of(example_weights, labels.shape)
    losses = np.zeros(labels.shape)
    norm = np.zeros(labels.shape)
    for idx in np.ndindex(*labels.shape):
        y = int(labels[idx])
        if not mask[idx] or v[idx] == 0 or (ignore_index is not None and y == ignore_index):
            continue
        losses[idx] = -v[idx] * w[y] * lp[idx][y]
        norm[idx] = v[idx] * w[y]
    return reduce(losses, norm, reduction)


def softmax_cross_entropy_grad(logits, labels, *, weights=None, where=None, example_weights=None):
    """Closed form `m_i v_i w_{y_i} (P_i - Y_i) / S` for integer labels, class axis last."""
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    k = x.shape[-1]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    mask = where_of(where, labels.shape)
    onehot = np.eye(k)[labels]
    wy = w[labels] * mask * example_weights_of(example_weights, labels.shape)
    s = wy.sum()
    return np.zeros_like(x) if s == 0 else wy[..., None] * (softmax(x) - onehot) / s


def softmax_cross_entropy_example_weights_grad(
    logits, labels, example_weights, *, weights=None, where=None
):
    """Closed form d mean / d v_i = m_i w_{y_i} (l_i - L) / S, class axis last.

    `l_i` is the unweighted NLL, `L` the weighted mean and `S = sum_i m_i v_i w_{y_i}`;
    0 where `where` is False. At v_i = 0 the example does not count in `L` or `S`, and the
    derivative is still the formula's (d/dv_i of `sum v l / sum v w` at v_i = 0).
    """
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    k = x.shape[-1]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    v = example_weights_of(example_weights, labels.shape)
    mask = where_of(where, labels.shape)
    nll = -np.take_along_axis(log_softmax(x), labels[..., None], -1)[..., 0]
    share = np.where(mask, w[labels], 0.0)
    s = np.sum(share * v)
    if s == 0:
        return np.zeros(labels.shape)
    mean = np.sum(share * v * nll) / s
    return share * (nll - mean) / s


# Calibration.


def top_label(logits, labels):
    """Float64 top-label confidence max_k softmax_k, and whether argmax equals the label."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return p.max(axis=-1), np.argmax(x, axis=-1) == np.asarray(labels)


def calibration_bins(logits, labels, n_bins, where=None):
    """Per-bin (mean confidence, accuracy, count), bin = min(floor(c * B), B - 1), NaN if empty.

    Examples are (N, K) logits; the loop assigns one example at a time.
    """
    conf, correct = top_label(logits, labels)
    mask = where_of(where, conf.shape)
    conf_sum, hits, count = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins, np.int64)
    for c, ok, m in zip(conf, correct, mask, strict=True):
        if not m:
            continue
        b = min(int(np.floor(c * n_bins)), n_bins - 1)
        conf_sum[b] += c
        hits[b] += ok
        count[b] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return conf_sum / count, hits / count, count


def expected_calibration_error(logits, labels, n_bins, norm="l1", where=None):
    """ECE (l1), RMS calibration error (l2) or MCE (max) from the per-bin statistics."""
    conf, acc, count = calibration_bins(logits, labels, n_bins, where)
    full = count > 0
    if not full.any():
        return 0.0
    share = count[full] / count.sum()
    gap = np.abs(acc[full] - conf[full])
    if norm == "l1":
        return float(np.sum(share * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(share * gap**2)))
    return float(gap.max())


def torchmetrics_calibration_error(confidences, accuracies, n_bins, norm="l1"):
    """torchmetrics' `_ce_compute` written from its formula.

    Boundaries are float32 `linspace(0, 1, B + 1)`; `bucketize(right=True) - 1`
    (numpy: `searchsorted(side="right") - 1`) gives left-closed bins and a
    (B + 1)-th slot that only confidence 1.0 reaches; empty bins read 0.
    """
    conf = np.asarray(confidences, np.float32).astype(np.float64)
    acc = np.asarray(accuracies, np.float64)
    edges = np.linspace(0, 1, n_bins + 1, dtype=np.float32).astype(np.float64)
    index = np.searchsorted(edges, conf, side="right") - 1
    count = np.bincount(index, minlength=n_bins + 1).astype(np.float64)
    safe = np.where(count > 0, count, 1)
    conf_bin = np.bincount(index, conf, minlength=n_bins + 1) / safe
    acc_bin = np.bincount(index, acc, minlength=n_bins + 1) / safe
    prop = count / count.sum()
    if norm == "l1":
        return float(np.sum(np.abs(acc_bin - conf_bin) * prop))
    if norm == "max":
        return float(np.max(np.abs(acc_bin - conf_bin)))
    return float(np.sqrt(np.sum((acc_bin - conf_bin) ** 2 * prop)))


def temperature_nll(logits, labels, temperature, where=None):
    """Mean float64 NLL of softmax(logits / T) over the counted examples."""
    x = np.asarray(logits, np.float64) / temperature
    labels = np.asarray(labels)
    mask = where_of(where, labels.shape)
    m = x.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[:, 0]
    nll = lse - x[np.arange(len(labels)), labels]
    return float(nll[mask].mean())


def fit_temperature(logits, labels, where=None, bounds=(1e-3, 1e3)):
    """Minimises `temperature_nll` over log T by golden-section search, then polishes on T."""
    f = lambda log_t: temperature_nll(logits, labels, np.exp(log_t), where)  # noqa: E731
    a, b = np.log(bounds[0]), np.log(bounds[1])
    r = (np.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    while b - a > 1e-12:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return float(np.exp((a + b) / 2))


# Divergences: KL, entropy, distillation (loops over examples, class axis moved last).


def _kl_rows(log_q, p, log_p):
    """sum_c p_c (log p_c - log q_c) per row, skipping p_c == 0 (0 log 0 = 0)."""
    out = np.zeros(log_q.shape[:-1])
    for idx in np.ndindex(*out.shape):
        total = 0.0
        for c in range(log_q.shape[-1]):
            if p[idx][c] != 0:
                total += p[idx][c] * (log_p[idx][c] - log_q[idx][c])
        out[idx] = total
    return out


def kl_divergence(
    logits,
    targets,
    *,
    axis=-1,
    log_targets=False,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """KL(targets || softmax(logits)) per example; "mean" divides by the kept examples."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    t = np.moveaxis(np.asarray(targets, np.float64), axis, -1)
    p = np.exp(t) if log_targets else t
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = t if log_targets else np.log(p)
    return masked_reduce(_kl_rows(log_softmax(x), p, log_p), where, reduction, example_weights)


def kl_divergence_grads(logits, targets, *, log_targets=False):
    """Closed-form per-example gradients, class axis last: d/dlogits, d/dtargets."""
    x = np.asarray(logits, np.float64)
    t = np.asarray(targets, np.float64)
    p = np.exp(t) if log_targets else t
    log_q = log_softmax(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = t if log_targets else np.log(p)
        inner = np.where(p != 0, log_p - log_q + 1, 0.0)
    dx = p.sum(-1, keepdims=True) * probabilities(log_q) - p
    dt = p * inner if log_targets else inner
    return dx, dt


def entropy(logits, *, axis=-1, where=None, reduction="none", example_weights=None):
    """-sum_c q_c log q_c of q = softmax(logits), per example."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    log_q = log_softmax(x)
    q = probabilities(log_q)
    entropies = _kl_rows(np.zeros_like(q), q, -log_q) * 1.0
    return masked_reduce(entropies, where, reduction, example_weights)


def entropy_grad(logits):
    """dH/dx_j = -q_j (log q_j + H), class axis last, per example."""
    x = np.asarray(logits, np.float64)
    log_q = log_softmax(x)
    q = probabilities(log_q)
    h = entropy(x)[..., None]
    return np.where(q != 0, -q * (np.where(q != 0, log_q, 0.0) + h), 0.0)


def distillation_loss(
    student,
    teacher,
    *,
    temperature=1.0,
    axis=-1,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """T^2 KL(softmax(t / T) || softmax(s / T)) per example."""
    s = np.moveaxis(np.asarray(student, np.float64), axis, -1) / temperature
    t = np.moveaxis(np.asarray(teacher, np.float64), axis, -1) / temperature
    log_p = log_softmax(t)
    losses = temperature**2 * _kl_rows(log_softmax(s), probabilities(log_p), log_p)
    return masked_reduce(losses, where, reduction, example_weights)


def distillation_grads(student, teacher, *, temperature=1.0):
    """Per-example gradients, class axis last: T (q - p) and T p (log p - log q - KL)."""
    s = np.asarray(student, np.float64) / temperature
    t = np.asarray(teacher, np.float64) / temperature
    log_q, log_p = log_softmax(s), log_softmax(t)
    p, q = probabilities(log_p), probabilities(log_q)
    kl = _kl_rows(log_q, p, log_p)[..., None]
    with np.errstate(invalid="ignore"):
        dt = np.where(p != 0, p * (log_p - log_q - kl), 0.0)
    return temperature * (q - p), temperature * dt


def _student_teacher(student, teacher, temperature, axis=-1):
    """(log q, q, log p, p) of q = softmax(s / T) and p = softmax(t / T), class axis last."""
    s = np.moveaxis(np.asarray(student, np.float64), axis, -1) / temperature
    t = np.moveaxis(np.asarray(teacher, np.float64), axis, -1) / temperature
    return log_softmax(s), softmax(s), log_softmax(t), softmax(t)


def _jsd_rows(log_q, q, log_p, p, beta):
    """beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q; the KLs at 0 and 1."""
    if beta == 0:
        return _kl_rows(log_q, p, log_p)
    if beta == 1:
        return _kl_rows(log_p, q, log_q)
    with np.errstate(divide="ignore"):
        log_m = np.log(beta * p + (1 - beta) * q)
    return beta * _kl_rows(log_m, p, log_p) + (1 - beta) * _kl_rows(log_m, q, log_q)


def jensen_shannon_divergence(
    student,
    teacher,
    *,
    beta=0.5,
    temperature=1.0,
    axis=-1,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """T^2 times the generalised JSD of GKD per example: forward KL at beta 0, reverse at 1."""
    log_q, q, log_p, p = _student_teacher(student, teacher, temperature, axis)
    losses = temperature**2 * _jsd_rows(log_q, q, log_p, p, beta)
    return masked_reduce(losses, where, reduction, example_weights)


def jensen_shannon_grads(student, teacher, *, beta=0.5, temperature=1.0):
    """Per-example partials of T^2 JSD, class axis last: (d/ds, d/dt, d/dbeta, d/dT).

    For 0 < beta < 1 and finite logits. From J = beta sum p log p + (1 - beta) sum q log q
    - sum m log m: dJ/dq_c = (1 - beta) log(q_c / m_c), taken through the softmax Jacobian
    (diag(q) - q q^T) / T of s; dJ/dbeta = sum p log p - sum q log q - sum (p - q)(log m + 1)
    = KL(p || m) - KL(q || m); and T^2 J(s / T, t / T) is homogeneous of degree 2 in
    (s, t, T), so dT = (2 loss - s . ds - t . dt) / T.
    """
    s = np.asarray(student, np.float64)
    t = np.asarray(teacher, np.float64)
    log_q, q, log_p, p = _student_teacher(s, t, temperature)
    log_m = np.log(beta * p + (1 - beta) * q)
    kl_qm = _kl_rows(log_m, q, log_q)[..., None]
    kl_pm = _kl_rows(log_m, p, log_p)[..., None]
    ds = temperature * (1 - beta) * q * (log_q - log_m - kl_qm)
    dt = temperature * beta * p * (log_p - log_m - kl_pm)
    dbeta = temperature**2 * (kl_pm - kl_qm)[..., 0]
    loss = temperature**2 * (beta * kl_pm + (1 - beta) * kl_qm)[..., 0]
    dtemp = (2 * loss - np.sum(s * ds, -1) - np.sum(t * dt, -1)) / temperature
    return ds, dt, dbeta, dtemp


def reverse_kl_divergence(
    student,
    teacher,
    *,
    temperature=1.0,
    axis=-1,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """T^2 KL(softmax(s / T) || softmax(t / T)) per example."""
    log_q, q, log_p, _ = _student_teacher(student, teacher, temperature, axis)
    losses = temperature**2 * _kl_rows(log_p, q, log_q)
    return masked_reduce(losses, where, reduction, example_weights)


def reverse_kl_grads(student, teacher, *, temperature=1.0):
    """Per-example gradients, class axis last: T q (log q - log p - KL), T (p - q), and d/dT.

    d/dT from homogeneity, as in `jensen_shannon_grads`; finite logits only.
    """
    s = np.asarray(student, np.float64)
    t = np.asarray(teacher, np.float64)
    log_q, q, log_p, p = _student_teacher(s, t, temperature)
    kl = _kl_rows(log_p, q, log_q)
    with np.errstate(invalid="ignore"):
        ds = temperature * np.where(q != 0, q * (log_q - log_p - kl[..., None]), 0.0)
    dt = temperature * (p - q)
    dtemp = (2 * temperature**2 * kl - np.sum(s * ds, -1) - np.sum(t * dt, -1)) / temperature
    return ds, dt, dtemp


# Binary, focal and poly-1 oracles.


def sigmoid_binary_cross_entropy(
    logits,
    labels,
    *,
    weights=None,
    pos_weight=None,
    label_smoothing=0.0,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """PyTorch's form (1 - y) x + (1 + (p - 1) y) log(1 + e^-x), in float64."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64) * (1 - label_smoothing) + label_smoothing / 2
    p = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
    w = 1.0 if weights is None else np.asarray(weights, np.float64)
    losses = w * ((1 - y) * x + (1 + (p - 1) * y) * np.logaddexp(0.0, -x))
    return masked_reduce(np.broadcast_to(losses, x.shape), where, reduction, example_weights)


def sigmoid_binary_cross_entropy_grads(logits, labels, *, weights=None, pos_weight=None):
    """Closed-form elementwise partials (x, y, w, p) of the unreduced loss."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    p = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
    w = 1.0 if weights is None else np.asarray(weights, np.float64)
    s = 1 / (1 + np.exp(-x))
    dx = w * (s * (1 + (p - 1) * y) - p * y)
    dy = w * (-x + (p - 1) * np.logaddexp(0.0, -x))
    dw = (1 - y) * x + (1 + (p - 1) * y) * np.logaddexp(0.0, -x)
    dp = w * y * np.logaddexp(0.0, -x)
    return dx, dy, dw, dp


def binary_cross_entropy(
    probs, labels, *, weights=None, where=None, reduction="mean", example_weights=None
):
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.float64)
    w = 1.0 if weights is None else np.asarray(weights, np.float64)
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log(1 - p), -100.0)
    losses = -w * (y * log_p + (1 - y) * log_q)
    return masked_reduce(np.broadcast_to(losses, p.shape), where, reduction, example_weights)


def sigmoid_focal_loss(
    logits, labels, *, alpha=0.25, gamma=2.0, where=None, reduction="mean", example_weights=None
):
    """torchvision's formula, term by term, in float64."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    p = 1 / (1 + np.exp(-x))
    ce = np.logaddexp(0.0, -x) * y + np.logaddexp(0.0, x) * (1 - y)
    p_t = p * y + (1 - p) * (1 - y)
    losses = ce * (1 - p_t) ** gamma
    if alpha is not None:
        losses = (alpha * y + (1 - alpha) * (1 - y)) * losses
    return masked_reduce(losses, where, reduction, example_weights)


def softmax_focal_loss(
    logits,
    labels,
    *,
    gamma=2.0,
    weights=None,
    ignore_index=None,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """Class axis last; -v w_y (1 - q_y)^gamma log q_y over the counted examples."""
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    k = x.shape[-1]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    mask = where_of(where, labels.shape)
    v = example_weights_of(example_weights, labels.shape)
    losses = np.zeros(labels.shape)
    norm = np.zeros(labels.shape)
    for idx in np.ndindex(*labels.shape):
        y = int(labels[idx])
        if not mask[idx] or v[idx] == 0 or (ignore_index is not None and y == ignore_index):
            continue
        log_q = log_softmax(x[idx])
        q_y = np.exp(log_q[y])
        losses[idx] = -v[idx] * w[y] * (1 - q_y) ** gamma * log_q[y]
        norm[idx] = v[idx] * w[y]
    return reduce(losses, norm, reduction)


def poly1_cross_entropy(
    logits,
    labels,
    *,
    epsilon=1.0,
    weights=None,
    ignore_index=None,
    label_smoothing=0.0,
    where=None,
    reduction="mean",
    example_weights=None,
):
    """Class axis last: v_i [CE_i + epsilon sum_c w_c y~_c (1 - q_c)], normalised like CE."""
    x = np.asarray(logits, np.float64)
    k = x.shape[-1]
    labels = np.asarray(labels)
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    probs = np.issubdtype(labels.dtype, np.floating)
    example_shape = x.shape[:-1]
    mask = where_of(where, example_shape)
    v = example_weights_of(example_weights, example_shape)
    ce = softmax_cross_entropy(
        x,
        labels,
        weights=weights,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        where=where,
        reduction="none",
        example_weights=example_weights,
    )
    losses = np.array(ce, dtype=np.float64)
    norm = np.zeros(example_shape)
    for idx in np.ndindex(*example_shape):
        if v[idx] == 0:
            continue
        if probs:
            target = labels[idx].astype(np.float64)
            n = 1.0
        else:
            y = int(labels[idx])
            if ignore_index is not None and y == ignore_index:
                continue
            target = np.eye(k)[y]
            n = w[y]
        if not mask[idx]:
            continue
        finite = x[idx] > -np.inf
        target = (1 - label_smoothing) * target + np.where(
            finite, label_smoothing / finite.sum(), 0
        )
        losses[idx] += v[idx] * epsilon * np.sum(w * target * (1 - softmax(x[idx])))
        norm[idx] = v[idx] * n
    return reduce(losses, norm, reduction)


# Calibration measures with either bin rule, classwise and debiased errors, Brier
# scores, bootstrap intervals, vector scaling.


def _counted(n, where):
    return where_of(where, (n,)).copy()


def width_bin(confidence, n_bins):
    """min(floor(c B), B - 1), one example at a time."""
    return np.array([min(int(np.floor(c * n_bins)), n_bins - 1) for c in confidence], np.int64)


def mass_bin(confidence, n_bins):
    """Sorted confidences (stable: ties in input order) split as numpy.array_split splits."""
    order = np.argsort(np.asarray(confidence), kind="stable")
    bins = np.empty(len(order), np.int64)
    for b, run in enumerate(np.array_split(order, n_bins)):
        bins[run] = b
    return bins


def binned_error(confidence, outcome, n_bins, norm="l1", binning="width", debiased=False):
    """One binned calibration error of (confidence, outcome) pairs; for "l2" its square.

    Debiased (Kumar et al. 2019): each bin with n_b >= 2 contributes
    pi_b ((a_b - c_b)^2 - a_b (1 - a_b) / (n_b - 1)); smaller bins contribute 0.
    """
    confidence = np.asarray(confidence, np.float64)
    outcome = np.asarray(outcome, np.float64)
    n = len(confidence)
    if n == 0:
        return 0.0
    bins = (mass_bin if binning == "mass" else width_bin)(confidence, n_bins)
    total, largest = 0.0, 0.0
    for b in range(n_bins):
        members = bins == b
        n_b = members.sum()
        if n_b == 0:
            continue
        a, c, share = outcome[members].mean(), confidence[members].mean(), n_b / n
        largest = max(largest, abs(a - c))
        if norm == "l1":
            total += share * abs(a - c)
        elif not debiased:
            total += share * (a - c) ** 2
        elif n_b >= 2:
            total += share * ((a - c) ** 2 - a * (1 - a) / (n_b - 1))
    return largest if norm == "max" else total


def calibration_error(
    logits,
    labels,
    *,
    n_bins=15,
    norm="l1",
    binning="width",
    classwise=False,
    debiased=False,
    where=None,
):
    """Top-label or classwise binned error of softmax(logits), class axis last, (N, K)."""
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    keep = _counted(len(labels), where)
    p = softmax(x)[keep]
    labels = labels[keep]
    if classwise:
        per_class = np.array(
            [
                binned_error(p[:, k], labels == k, n_bins, norm, binning, debiased)
                for k in range(x.shape[-1])
            ]
        )
        if norm == "max":
            return float(per_class.max())
        if norm == "l2":
            return float(np.sqrt(np.mean(np.maximum(per_class, 0))))
        return float(per_class.mean())
    confidence = p.max(axis=-1) if len(p) else np.zeros(0)
    correct = (x[keep].argmax(axis=-1) == labels) if len(p) else np.zeros(0)
    value = binned_error(confidence, correct, n_bins, norm, binning, debiased)
    return float(np.sqrt(max(value, 0.0))) if norm == "l2" else float(value)


def sigmoid_calibration_error(logits, labels, *, n_bins=15, norm="l1", binning="width", where=None):
    x = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    keep = where_of(where, np.shape(logits)).ravel()
    value = binned_error(1 / (1 + np.exp(-x[keep])), y[keep], n_bins, norm, binning)
    return float(np.sqrt(value)) if norm == "l2" else float(value)


def binned_curve(logits, labels, n_bins, binning="width", where=None):
    """(mean confidence, accuracy, count) per bin of the top-label confidence; NaN if empty."""
    x = np.asarray(logits, np.float64)
    keep = _counted(len(labels), where)
    p = softmax(x)[keep]
    confidence = p.max(axis=-1) if len(p) else np.zeros(0)
    correct = x[keep].argmax(axis=-1) == np.asarray(labels)[keep] if len(p) else np.zeros(0)
    bins = (mass_bin if binning == "mass" else width_bin)(confidence, n_bins)
    count = np.array([(bins == b).sum() for b in range(n_bins)])
    with np.errstate(invalid="ignore"):
        conf = np.array([confidence[bins == b].sum() for b in range(n_bins)]) / count
        acc = np.array([np.sum(correct[bins == b]) for b in range(n_bins)]) / count
    return conf, acc, count


def brier_score(logits, labels, where=None):
    """Mean over counted examples of sum_k (p_k - [k = y])^2, class axis last."""
    p = softmax(np.asarray(logits, np.float64))
    onehot = np.eye(p.shape[-1])[np.asarray(labels)]
    return masked_reduce(np.sum((p - onehot) ** 2, axis=-1), where, "mean")


def sigmoid_brier_score(logits, labels, where=None):
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    return masked_reduce((p - np.asarray(labels, np.float64)) ** 2, where, "mean")


def bootstrap_calibration_error(logits, labels, rng, num_resamples, confidence=0.95, **options):
    """Percentile bootstrap: resample the counted examples with replacement (numpy's RNG)."""
    where = options.pop("where", None)
    keep = _counted(len(labels), where)
    x, y = np.asarray(logits)[keep], np.asarray(labels)[keep]
    estimate = calibration_error(x, y, **options)
    draws = [
        calibration_error(x[index], y[index], **options)
        for index in rng.integers(0, len(y), (num_resamples, len(y)))
    ]
    tail = (1 - confidence) / 2
    return estimate, *np.quantile(draws, [tail, 1 - tail])


def vector_scaling_nll(logits, labels, scale, bias, where=None):
    """Mean NLL of softmax(logits * scale + bias); -inf logits stay -inf."""
    x = np.asarray(logits, np.float64)
    z = np.where(np.isfinite(x), x * np.asarray(scale) + np.asarray(bias), -np.inf)
    nll = -log_softmax(z)[np.arange(len(labels)), np.asarray(labels)]
    return masked_reduce(nll, where, "mean")


def vector_scaling_search(logits, labels, where=None, grid=9, sweeps=60):
    """Brute force: the best (scale, bias) on a grid, then a compass search from it.

    Grid: scale in [-1, 3] and bias in [-3, 3] per class, the first bias fixed at
    0 (softmax ignores a common shift). Compass search: try +-step on each
    coordinate, keep any improvement, halve the step when none helps.
    Returns (nll, scale, bias).
    """
    k = np.asarray(logits).shape[-1]
    scales = np.linspace(-1.0, 3.0, grid)
    biases = np.linspace(-3.0, 3.0, grid)
    axes = [scales] * k + [biases] * (k - 1)
    best = (np.inf, None)
    for point in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2 * k - 1):
        value = vector_scaling_nll(logits, labels, point[:k], np.r_[0.0, point[k:]], where)
        if value < best[0]:
            best = (value, point)
    value, point = best
    step = 0.5
    for _ in range(sweeps):
        improved = False
        for i in range(2 * k - 1):
            for sign in (1.0, -1.0):
                trial = point.copy()
                trial[i] += sign * step
                trial_value = vector_scaling_nll(
                    logits, labels, trial[:k], np.r_[0.0, trial[k:]], where
                )
                if trial_value < value:
                    value, point, improved = trial_value, trial, True
        if not improved:
            step /= 2
    return value, point[:k], np.r_[0.0, point[k:]]


# Fused linear distillation (loops over examples, kernels in either layout).


def linear_distillation_loss(
    hidden,
    kernel,
    teacher,
    *,
    teacher_kernel=None,
    bias=None,
    teacher_bias=None,
    divergence="kl",
    beta=0.5,
    temperature=1.0,
    labels=None,
    alpha=0.0,
    ignore_index=None,
    where=None,
    kernel_layout="DV",
    reduction="mean",
    example_weights=None,
):
    """(1 - alpha) T^2 D(p || q) + alpha CE per example, with s = h W + b, q = softmax(s / T),
    p = softmax(t / T) and t the teacher's logits (given, or its h W + b); "mean" over the
    examples that `where` and `ignore_index` keep, each counted with its example weight."""

    def logits(h, w, b):
        h = np.asarray(h, np.float64)
        w = np.asarray(w, np.float64)
        w = w if kernel_layout == "DV" else w.T
        z = h.reshape(-1, h.shape[-1]) @ w
        return z if b is None else z + np.asarray(b, np.float64)

    s = logits(hidden, kernel, bias)
    if teacher_kernel is None:
        t = np.asarray(teacher, np.float64).reshape(s.shape)
    else:
        t = logits(teacher, teacher_kernel, teacher_bias)
    example_shape = np.shape(hidden)[:-1]
    mask = where_of(where, example_shape)
    mask = mask.reshape(-1).copy()
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if ignore_index is not None:
            mask &= y != ignore_index
    losses = np.zeros(s.shape[0])
    for i in range(s.shape[0]):
        if not mask[i]:
            continue
        log_q, log_p = log_softmax(s[i] / temperature), log_softmax(t[i] / temperature)
        q, p = probabilities(log_q), probabilities(log_p)
        if divergence == "kl":
            d = _kl_rows(log_q[None], p[None], log_p[None])[0]
        elif divergence == "reverse_kl":
            d = _kl_rows(log_p[None], q[None], log_q[None])[0]
        else:
            d = _jsd_rows(log_q[None], q[None], log_p[None], p[None], beta)[0]
        losses[i] = (1 - alpha) * temperature**2 * d
        if alpha:
            losses[i] += alpha * -log_softmax(s[i])[y[i]]
    shape = example_shape
    return masked_reduce(losses.reshape(shape), mask.reshape(shape), reduction, example_weights)


# Contrastive losses: example i is the pair (a_i, b_{y_i}); s_ij = a_i . b_j / T + bias.


def _contrastive(
    a,
    b,
    labels,
    *,
    kind,
    temperature,
    bias,
    symmetric=False,
    exclude_self=False,
    where=None,
    example_weights=None,
    reduction="mean",
):
    """Each counted example's softmax (or sigmoid) cross-entropy over its candidates: the
    counted rows of `a` (b -> a), the columns of `b` (all with labels; the counted ones on the
    diagonal and in NT-Xent), and always its own positive."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n, m = a.shape[0], b.shape[0]
    v = example_weights_of(example_weights, (n,))
    where = where_of(where, (n,))
    counted = where & (v != 0)
    if exclude_self:
        # A view is its partner's positive: a pair counts only with both views counted.
        counted = counted & counted.reshape(-1, 2)[:, ::-1].reshape(-1)
    owned = labels is None
    if owned:
        labels = np.arange(n) ^ 1 if exclude_self else np.arange(n)
    labels = np.asarray(labels)
    with np.errstate(invalid="ignore", over="ignore"):
        s = a @ b.T / temperature + (0.0 if bias is None else bias)
        losses = np.zeros(n)
        for i in range(n):
            y = labels[i]
            if not counted[i]:
                continue
            if not 0 <= y < m:
                losses[i] = np.nan
                continue
            cols = counted.copy() if owned else np.ones(m, bool)
            cols[y] = True
            if exclude_self:
                cols[i] = False
            if kind == "sigmoid":
                sign = np.where(np.arange(m) == y, 1.0, -1.0)
                losses[i] = np.sum(np.logaddexp(0.0, -sign * s[i])[cols])
                continue
            row = np.logaddexp.reduce(s[i, cols]) - s[i, y]
            if symmetric:
                rows = counted.copy()
                rows[i] = True
                column = np.logaddexp.reduce(s[rows, y]) - s[i, y]
                row = 0.5 * row + 0.5 * column
            losses[i] = row
    return masked_reduce(losses, where, reduction, example_weights)


def contrastive_cross_entropy(
    a, b, *, temperature=1.0, bias=None, labels=None, symmetric=True, **options
):
    """CLIP: the mean of the a -> b and b -> a cross-entropies of each pair (InfoNCE: a -> b)."""
    return _contrastive(
        a,
        b,
        labels,
        kind="softmax",
        temperature=temperature,
        bias=bias,
        symmetric=symmetric,
        **options,
    )


def ntxent_loss(z, *, temperature, **options):
    """NT-Xent: rows 2k and 2k+1 a pair, every other row a negative, never the row itself."""
    return _contrastive(
        z, z, None, kind="softmax", temperature=temperature, bias=None, exclude_self=True, **options
    )


def sigmoid_contrastive_loss(a, b, *, temperature, bias, labels=None, **options):
    """SigLIP: sum_j log(1 + exp(-eps_ij s_ij)) per row, eps = +1 on the positive, -1 else."""
    return _contrastive(a, b, labels, kind="sigmoid", temperature=temperature, bias=bias, **options)
