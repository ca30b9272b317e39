"""Options, validated in one place: the jitted entry point of every loss, and the option classes.

`entry_point` turns a loss's body into its public function: static options
are checked and become `jax.jit` static arguments, float hyperparameters are
checked against their `Interval` and stay traced (a schedule compiles once),
and a concrete value that the loss declares `off` reaches its body as None.
`LossOptions` is the base of `CrossEntropyLoss`, `BCEWithLogitsLoss` and
`FocalLoss`; they validate with the same `check_options`. Imports `_checks`;
the family modules import it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _checks, _rule


def _optional_integer(name: str, value: Any) -> int | None:
    return _checks.integer(name, value, optional=True)


def _required_integer(name: str, value: Any) -> int:
    result = _checks.integer(name, value)
    assert result is not None
    return result


def _reduction(name: str, value: Any) -> str:
    return _checks.reduction(value)


def _autodiff(name: str, value: Any) -> str:
    return _checks.one_of(name, value, _rule.AUTODIFF)


# Checks of the static options every loss shares; a loss may add its own.
STATIC_CHECKS: Mapping[str, Callable[[str, Any], Any]] = {
    "axis": _required_integer,
    "ignore_index": _optional_integer,
    "reduction": _reduction,
    "autodiff": _autodiff,
}


# The `jax.jit` program behind each public loss (its compilation cache is a test's
# business). Not an attribute of the loss: `functools.wraps`, which `jax.grad` and
# `jax.jit` use, copies a function's attributes onto its wrapper, where a `lower` would
# shadow the wrapper's own (`jax.jit(jax.grad(loss)).lower` would lower the bare loss).
_JITTED: dict[Callable, Any] = {}


def jitted(loss: Callable) -> Any:
    """The `jax.jit` function a public loss calls once its options are checked."""
    return _JITTED[loss]


def entry_point(
    *,
    static: tuple[str, ...] = (),
    hyperparameters: Mapping[str, _checks.Interval] | None = None,
    off: Mapping[str, float] | None = None,
    checks: Mapping[str, Callable[[str, Any], Any]] | None = None,
) -> Callable[[Callable], Callable]:
    """Makes `body` a public loss: its options checked, then a cached `jax.jit` call.

    Args:
      static: keyword options that set shapes or program structure; each is a
        static argument of `jax.jit`, and an array given for one is an error
        naming it. A body with an `autodiff` option has it static too, and is
        traced inside `_rule.autodiff(...)` with its value.
      hyperparameters: float keyword options and their valid intervals. The
        body receives the value: a float, or a traced scalar under `jit` (NaN
        if out of range); None only for an optional one given None.
      off: for the hyperparameters whose term a value switches off, that value
        (`{"z_loss": 0.0}`, `{"temperature": 1.0}`). Given as a number (not
        traced), it reaches the body as None: the body skips the term, and the
        program is the one without it. A traced value is never off (a
        schedule compiles once), nor is a value a loss does not declare here.
      checks: extra checks of static options, by name, beyond `STATIC_CHECKS`.
    """
    hyper = dict(hyperparameters or {})
    offs = dict(off or {})
    if not offs.keys() <= hyper.keys():
        raise TypeError(f"off names {sorted(offs.keys() - hyper.keys())}: not hyperparameters")
    static_checks = {**STATIC_CHECKS, **(checks or {})}

    def decorate(body: Callable) -> Callable:
        defaults = body.__kwdefaults__ or {}
        names = static + (("autodiff",) if "autodiff" in defaults else ())

        @functools.wraps(body)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with _rule.autodiff(kwargs.get("autodiff", "reverse")):
                return body(*args, **kwargs)

        jitted = jax.jit(traced, static_argnames=names)

        def check_options(**options: Any) -> dict[str, Any]:
            """Validates keyword options as the loss does; returns them as the body sees them."""
            for name in names:
                if name in options:
                    value = _checks.static_option(name, options[name])
                    if name in static_checks:
                        value = static_checks[name](name, value)
                    options[name] = value
            for name, interval in hyper.items():
                value = interval.check(name, options.get(name, defaults.get(name)))
                if name in offs and not _checks.is_traced(value) and value == offs[name]:
                    value = None
                options[name] = value
            return options

        @functools.wraps(body)
        def loss(*args: Any, **kwargs: Any) -> Any:
            return jitted(*args, **check_options(**kwargs))

        loss.check_options = check_options  # type: ignore[attr-defined]
        _JITTED[loss] = jitted
        return loss

    return decorate


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
    """Base of the frozen option dataclasses: each field is a keyword option of `loss`.

    Fields are validated on construction by the loss's own `check_options`;
    array options are stored as nested tuples of floats and concrete
    hyperparameters as floats, so an instance is hashable and can be a static
    argument of `jax.jit`.
    """

    loss: ClassVar[Callable[..., jax.Array]]
    array_options: ClassVar[tuple[str, ...]] = ("weights",)
    array_ndim: ClassVar[int | None] = 1

    def _options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for name in self.array_options:
            frozen = frozen_array(name, getattr(self, name), ndim=self.array_ndim)
            object.__setattr__(self, name, frozen)
        options = self._options()
        type(self).loss.check_options(**options)  # type: ignore[attr-defined]
        for name, value in options.items():
            if name not in self.array_options and not _checks.is_traced(value):
                if isinstance(value, np.generic | jax.Array | np.ndarray):
                    object.__setattr__(self, name, np.asarray(value).item())

    def __call__(self, logits: ArrayLike, labels: ArrayLike, **kwargs: Any) -> jax.Array:
        """Calls the loss with the stored options; `kwargs` (`where`, `example_weights`, ...)
        apply to this call."""
        logits = _checks.floating("logits", logits)
        dtype = _checks.compute_dtype(logits.dtype)
        options = self._options()
        for name in self.array_options:
            if options[name] is not None:
                options[name] = jnp.asarray(options[name], dtype)
        return type(self).loss(logits, labels, **{**options, **kwargs})
