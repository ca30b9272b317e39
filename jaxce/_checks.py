"""Argument validation shared by every loss; the bottom layer, importable by every module.

Every check runs at trace time on static information (shapes, dtypes, concrete
hyperparameters), so a bad call fails with a message naming the argument, what
was expected and what came, also under `jax.jit`. A traced hyperparameter
cannot be checked then: `Interval.check` turns an out-of-range value into NaN
and a `checkify` error naming it, as the label path does for a bad label.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.typing import ArrayLike

REDUCTIONS = ("mean", "sum", "none")


def floating(name: str, x: ArrayLike) -> jax.Array:
    """Converts `x` to an array and requires a real floating dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array; got dtype {x.dtype}.")
    return x


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


def one_of(name: str, value: Any, choices: Sequence[str]) -> str:
    """A static option that names one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}.")
    return value


def reduction(value: str) -> str:
    return one_of("reduction", value, REDUCTIONS)


def flag(name: str, value: Any) -> bool:
    """A static True/False option."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a Python bool (it is static); got {value!r}.")
    return bool(value)


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


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _concrete_float(name: str, value: Any) -> float:
    array = np.asarray(value)
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    if array.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {array.shape}.")
    result = float(array)
    if not np.isfinite(result):
        raise ValueError(f"{name} must be finite; got {result}.")
    return result


class Interval(NamedTuple):
    """The valid range of a float hyperparameter.

    A hyperparameter is a Python number or a scalar array; it may be traced.
    `check` returns a concrete value as a float, never rewritten (the value
    that switches a term off is the loss's to declare: `entry_point(off=...)`),
    and a traced value unchanged except that it becomes NaN outside the
    interval, reported by `checkify` under the argument's name.
    """

    low: float
    high: float = np.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False  # None is accepted (it switches the term off) and returned
    hint: str = ""

    def describe(self) -> str:
        if self.high == np.inf:
            text = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        else:
            low, high = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {low}{self.low:g}, {self.high:g}{high}"
        return text + self.hint

    def contains(self, value: Any) -> Any:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above & below

    def static(self, name: str, value: Any) -> float:
        """A concrete number inside the interval, for an option that must be static."""
        if is_traced(value):
            raise TypeError(f"{name} must be a Python number (it is static); got a traced value.")
        result = _concrete_float(name, value)
        if not self.contains(result):
            raise ValueError(f"{name} must be {self.describe()}; got {result}.")
        return result

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise TypeError(f"{name} must be a real number; got None.")
        if is_traced(value):
            value = jnp.asarray(value)
            real = jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(
                value.dtype, jnp.integer
            )
            if not real or value.ndim != 0:
                raise TypeError(
                    f"{name} must be a real scalar; got a traced {value.dtype}{list(value.shape)}."
                )
            if not jnp.issubdtype(value.dtype, jnp.floating):
                # `jit` traces a Python int (`gamma=2`) as an integer: it means its float value.
                value = value.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
            inside = self.contains(value)
            checkify.debug_check(
                inside, f"{name} must be {self.describe()}; got {{value}}.", value=value
            )
            return jnp.where(inside, value, jnp.nan)
        return self.static(name, value)


UNIT = Interval(0.0, 1.0)
NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_open=True)


def static_option(name: str, value: Any) -> Any:
    """Rejects an array for an option that sets shapes or the program's structure."""
    if is_traced(value) or isinstance(value, jax.Array | np.ndarray):
        raise TypeError(
            f"{name} is static (it sets shapes or the program's structure): pass a Python "
            f"value, not an array; got {type(value).__name__}."
        )
    return value


def broadcast_option(
    name: str, x: ArrayLike | None, shape: tuple[int, ...], of: str = "logits shape"
) -> jax.Array | None:
    """A floating option (weights) broadcastable to `shape` (the `of`), given its rank.

    Not broadcast: the rule skeleton sums its cotangent over the axes it
    broadcasts along before resharding it like the option, so a weight per
    class of example-sharded logits costs an all-reduce of the classes, not a
    gather of the examples.
    """
    if x is None:
        return None
    x = floating(name, x)
    try:
        fits = x.ndim <= len(shape) and np.broadcast_shapes(x.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} must be broadcastable to {of} {shape}; got {x.shape}.")
    return x.reshape((1,) * (len(shape) - x.ndim) + x.shape)
