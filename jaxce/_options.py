"""Frozen option holders that call a loss: `CrossEntropyLoss`, `BCEWithLogitsLoss`, `FocalLoss`.

Array options (class weights, `pos_weight`) are stored as nested tuples of
floats, so an instance is hashable and can be a static argument of `jax.jit`;
they become arrays again, in the loss's compute dtype, on every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _checks


def frozen_array(name: str, value: Any, *, ndim: int | None = None) -> Any:
    """An array option as (nested) tuples of floats; `ndim` is required if given."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be real numbers; got dtype {array.dtype}.")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s); got shape {array.shape}.")
    return _nested_tuple(array.astype(np.float64))


def _nested_tuple(array: np.ndarray) -> Any:
    if array.ndim == 0:
        return float(array)
    return tuple(_nested_tuple(row) for row in array)


class LossOptions:
    """Base of the frozen option dataclasses: each field is a keyword option of `loss`."""

    loss: ClassVar[Callable[..., jax.Array]]
    array_options: ClassVar[tuple[str, ...]] = ("weights",)
    array_ndim: ClassVar[int | None] = 1

    def _freeze_arrays(self) -> None:
        for name in self.array_options:
            frozen = frozen_array(name, getattr(self, name), ndim=self.array_ndim)
            object.__setattr__(self, name, frozen)

    def __call__(self, logits: ArrayLike, labels: ArrayLike, **kwargs: Any) -> jax.Array:
        """Calls the loss with the stored options; `kwargs` are per call (`where`, ...)."""
        logits = _checks.floating("logits", logits)
        dtype = _checks.compute_dtype(logits.dtype)
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for name in self.array_options:
            if options[name] is not None:
                options[name] = jnp.asarray(options[name], dtype)
        return type(self).loss(logits, labels, **options, **kwargs)
