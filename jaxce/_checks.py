"""Argument validation shared by every loss.

Every check runs at trace time on static information (shapes, dtypes, Python
hyperparameters), so a bad call fails with a message naming the argument, what
was expected and what came, also under `jax.jit`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

REDUCTIONS = ("mean", "sum", "none")


def floating(name: str, x: ArrayLike) -> jax.Array:
    """Converts `x` to an array and requires a real floating dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array; got dtype {x.dtype}.")
    return x


def optional_floating(name: str, x: ArrayLike | None) -> jax.Array | None:
    return None if x is None else floating(name, x)


def compute_dtype(*dtypes: Any) -> Any:
    """float32 for half precision, otherwise the widest input float type.

    Chosen explicitly rather than by promotion, so it holds under
    `jax_numpy_dtype_promotion="strict"` too.
    """
    return max((np.dtype(jnp.float32), *map(np.dtype, dtypes)), key=lambda d: d.itemsize)


def scalar(name: str, x: ArrayLike) -> jax.Array:
    """A real-valued scalar array (integer or floating)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_ or not jnp.issubdtype(x.dtype, jnp.number) or x.dtype.kind == "c":
        raise TypeError(f"{name} must be a real number; got dtype {x.dtype}.")
    if x.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {x.shape}.")
    return x


def reduction(value: str) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {value!r}.")
    return value


def static_float(name: str, value: Any) -> float:
    """Hyperparameters that change the traced program must be Python numbers."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a Python number (it is static); got a traced value.")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}.") from None
    if not np.isfinite(result):
        raise ValueError(f"{name} must be finite; got {result}.")
    return result


def unit_interval(name: str, value: Any) -> float:
    result = static_float(name, value)
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {result}.")
    return result


def non_negative(name: str, value: Any) -> float:
    result = static_float(name, value)
    if result < 0.0:
        raise ValueError(f"{name} must be >= 0; got {result}.")
    return result


def positive(name: str, value: Any) -> Any:
    """Checks `value > 0` when it is concrete; a traced value passes through."""
    if isinstance(value, jax.core.Tracer):
        return value
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number) or array.dtype.kind == "c":
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    if not np.all(array > 0) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite and > 0; got {value!r}.")
    return value


def integer(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {value!r}.") from None


def positive_integer(name: str, value: Any) -> int:
    result = integer(name, value)
    assert result is not None
    if result < 1:
        raise ValueError(f"{name} must be >= 1; got {result}.")
    return result


def class_axis(axis: Any, ndim: int, *, name: str = "logits") -> int:
    axis = integer("axis", axis)
    assert axis is not None
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis); got a scalar.")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"axis must be in [{-ndim}, {ndim}) for {name} of rank {ndim}; got {axis}."
        )
    return axis % ndim


def without_axis(shape: Sequence[int], axis: int) -> tuple[int, ...]:
    return tuple(shape[:axis]) + tuple(shape[axis + 1 :])


def same_shape(name: str, x: jax.Array, expected: Sequence[int], context: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {tuple(expected)} ({context}); got {tuple(x.shape)}."
        )


def class_vector(name: str, x: ArrayLike | None, num_classes: int) -> jax.Array | None:
    """A per-class vector such as `weights`: floating, shape `(num_classes,)`."""
    if x is None:
        return None
    x = floating(name, x)
    if x.shape != (num_classes,):
        raise ValueError(
            f"{name} must have shape ({num_classes},) (one entry per class); got {x.shape}."
        )
    return x


def example_mask(
    where: ArrayLike | None, shape: Sequence[int], *, of: str = "the examples' shape"
) -> jax.Array:
    """`where` as a boolean array of `shape`; all True when `where` is None."""
    shape = tuple(shape)
    if where is None:
        return jnp.ones(shape, bool)
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array; got dtype {where.dtype}.")
    try:
        return jnp.broadcast_to(where, shape)
    except ValueError:
        raise ValueError(
            f"where must be broadcastable to {of} {shape}; got {where.shape}."
        ) from None
