"""Float64 NumPy oracles written from the formulas; they share no code with jaxce."""

import numpy as np


def log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    return np.exp(log_softmax(x, axis))


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
):
    """Loops over examples in float64 with the class axis moved last."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    k = x.shape[-1]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    labels = np.asarray(labels)
    probs = np.issubdtype(labels.dtype, np.floating)
    if probs:
        labels = np.moveaxis(labels.astype(np.float64), axis, -1)
    example_shape = x.shape[:-1]
    mask = np.ones(example_shape, bool) if where is None else np.broadcast_to(where, example_shape)
    losses = np.zeros(example_shape)
    norm = np.zeros(example_shape)
    eps = label_smoothing
    for idx in np.ndindex(*example_shape):
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
        losses[idx] = loss + z_loss * lse**2
        norm[idx] = n
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return 0.0 if norm.sum() == 0 else losses.sum() / norm.sum()


def softmax_cross_entropy_grad(logits, labels, *, weights=None, where=None):
    """Closed form `m_i w_{y_i} (P_i - Y_i) / S` for integer labels, class axis last."""
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    k = x.shape[-1]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    mask = np.ones(labels.shape, bool) if where is None else np.broadcast_to(where, labels.shape)
    onehot = np.eye(k)[labels]
    wy = w[labels] * mask
    s = wy.sum()
    return np.zeros_like(x) if s == 0 else wy[..., None] * (softmax(x) - onehot) / s
