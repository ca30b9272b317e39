"""The core contract every loss shares: empty batches, option classes, traced
hyperparameters, static options, binary label checks (the losses of `tests/registry.py`,
each declared once there), and the layering of the package's modules."""

import ast
import dataclasses
import functools
import inspect
import pydoc
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxce
from tests import registry
from tests.helpers import assert_derivatives_match_differences, cache_size, replaced
from tests.registry import CALIBRATION, LOSSES, NOT_LOSSES, Loss

PACKAGE = Path(jaxce.__file__).parent


def test_every_public_name_is_a_registered_loss_or_not_a_loss():
    # A new public loss needs an entry in tests/registry.py, which every shared test reads.
    registered = {loss.public for loss in LOSSES} | {loss.criterion.__name__ for loss in CRITERIA}
    unknown = set(jaxce.__all__) - registered - NOT_LOSSES - CALIBRATION
    assert not unknown, (
        f"public names in neither tests/registry.py LOSSES nor NOT_LOSSES: {unknown}"
    )
    assert not registered & NOT_LOSSES


CRITERIA = [loss for loss in LOSSES if loss.criterion is not None]
HYPER = [loss for loss in LOSSES if loss.hyper]
REDUCTIONS = ("mean", "sum", "none")


def _f32(arrays):
    return tuple(
        jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else jnp.asarray(a) for a in arrays
    )


def _criterion(loss, arrays, **options):
    """The loss's option class holding its options (array keywords as tuples)."""
    _, keywords = loss._split(arrays)
    return loss.criterion(**loss.options, **{k: tuple(v) for k, v in keywords.items()}, **options)


# Empty batches: 0 (an empty array for "none") and a zero gradient, weighted or not.


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: loss.name)
def test_empty_batch_is_zero_with_zero_gradient(loss):
    data = loss.data(0, 3)
    arrays = _f32(data)
    shape = loss.example_shape(0, 3)

    # Zero weights change nothing but the mean's normaliser, 0 here too.
    calls = [(r, False) for r in REDUCTIONS] + [("mean", True)]

    @jax.jit
    def program(arrays, v):
        losses, by_criterion = [], []
        for reduction, weighted in calls:

            def total(floats, v, reduction=reduction, weighted=weighted):
                xs = replaced(arrays, loss.differentiable, floats)
                value = loss(xs, reduction=reduction, example_weights=v if weighted else None)
                return jnp.sum(value), value

            floats = tuple(arrays[i] for i in loss.differentiable)
            grads, value = jax.grad(total, argnums=(0, 1), has_aux=True)(floats, v)
            losses.append((value, grads))
        for reduction in REDUCTIONS if loss.criterion is not None else ():
            criterion = _criterion(loss, data, reduction=reduction)

            def by_class(x, criterion=criterion):
                value = criterion(x, *arrays[1 : len(loss.inputs)])
                return jnp.sum(value), value

            by_criterion.append(jax.grad(by_class, has_aux=True)(arrays[0])[::-1])
        return losses, by_criterion

    losses, by_criterion = program(arrays, jnp.zeros(shape, jnp.float32))
    for (reduction, _), (value, (grads, dv)) in zip(calls, losses, strict=True):
        assert value.shape == (shape if reduction == "none" else ()), reduction
        assert value.dtype == jnp.float32 and np.all(np.asarray(value) == 0), reduction
        for g, i in zip(grads, loss.differentiable, strict=True):
            assert g.shape == arrays[i].shape and g.dtype == arrays[i].dtype
            assert np.all(np.asarray(g) == 0), reduction
        assert dv.shape == shape and np.all(np.asarray(dv) == 0), reduction
    for reduction, (value, grad) in zip(REDUCTIONS, by_criterion, strict=False):
        assert value.shape == (shape if reduction == "none" else ()) and np.all(value == 0)
        assert grad.shape == arrays[0].shape and np.all(np.asarray(grad) == 0)


def test_empty_batch_with_the_class_axis_between_example_axes():
    logits = jnp.zeros((2, 3, 0, 7), jnp.float32)
    labels = np.zeros((2, 0, 7), np.int32)

    def loss(x, reduction):
        return jaxce.softmax_cross_entropy(x, labels, axis=1, reduction=reduction)

    for reduction in REDUCTIONS:
        value, grad = jax.value_and_grad(lambda x, r=reduction: jnp.sum(loss(x, r)))(logits)
        assert loss(logits, reduction).shape == ((2, 0, 7) if reduction == "none" else ())
        assert value == 0 and grad.shape == logits.shape and np.all(np.asarray(grad) == 0)


# Option classes call their function with the options they hold; `where` and the example
# weights are arguments of the call.


@pytest.mark.parametrize("loss", CRITERIA, ids=lambda loss: loss.name)
def test_option_class_calls_its_function(loss):
    data = loss.data(4, 3, seed=10)
    arrays = _f32(data)
    shape = loss.example_shape(4, 3)
    v = jnp.asarray(np.resize([1.0, 0.0, 2.0, 0.5], shape), jnp.float32)
    where = np.resize([True, True, False], shape)
    n = len(loss.inputs)

    @jax.jit
    def program(arrays, v):
        out = {}
        for reduction in REDUCTIONS:
            criterion = _criterion(loss, data, reduction=reduction)

            def by_class(v, criterion=criterion):
                return jnp.sum(criterion(*arrays[:n], where=where, example_weights=v))

            def by_function(v, reduction=reduction):
                kw = dict(where=where, example_weights=v, reduction=reduction)
                return jnp.sum(loss(arrays, **kw))

            out[reduction] = jax.value_and_grad(by_class)(v), jax.value_and_grad(by_function)(v)
        return out

    for got, want in program(arrays, v).values():
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)
    assert "example_weights" not in {f.name for f in dataclasses.fields(loss.criterion)}


# Traced hyperparameters: every float hyperparameter of a loss traced at once. A "case" is
# (name, f(arrays, hyperparameters), arrays, {name: valid values}).


def _smooth_labels(arrays, h):
    onehot = jax.nn.one_hot(jnp.asarray([0, 2, 1, 4, 3, 0]), 5, dtype=arrays[0].dtype)
    return jnp.sum(jaxce.smooth_labels(onehot, h["epsilon"]) * arrays[0])


def _log_softmax(arrays, h):
    return jnp.sum(jaxce.log_softmax(arrays[0], temperature=h["temperature"])[:, 0])


_LOGITS = (np.random.default_rng(7).normal(size=(6, 5)) * 2,)
HYPER_CASES = [(loss.name, loss, loss.data(6, 5, seed=7), loss.hyper) for loss in HYPER] + [
    ("smooth_labels", _smooth_labels, _LOGITS, dict(epsilon=(0.1, 0.5))),
    ("log_softmax", _log_softmax, _LOGITS, dict(temperature=(0.5, 3.0))),
]


def _samples(hyper, kind=float):
    """The hyperparameters' values, the i-th of each (cycling through the shorter lists)."""
    count = max(len(values) for values in hyper.values())
    return [{k: kind(v[i % len(v)]) for k, v in hyper.items()} for i in range(count)]


def _call(f, arrays, h):
    return f(arrays, **h) if isinstance(f, Loss) else f(arrays, h)


@functools.cache
def _traced(name):
    """The case with its hyperparameters traced as floats and as integers: one program,
    shared by the tests of this file."""
    _, f, _, _ = next(c for c in HYPER_CASES if c[0] == name)

    def program(arrays, floats, integers):
        return [_call(f, arrays, h) for h in (floats, integers)]

    return jax.jit(program)


@pytest.mark.parametrize("name,f,data,hyper", HYPER_CASES, ids=[c[0] for c in HYPER_CASES])
def test_traced_hyperparameters_compile_once_and_equal_python_numbers(name, f, data, hyper):
    arrays, traced = _f32(data), _traced(name)
    ones = dict.fromkeys(hyper, 1)
    size = None
    for h in _samples(hyper):
        got, _ = traced(arrays, {k: jnp.float32(v) for k, v in h.items()}, ones)
        size = size or traced._cache_size()
        np.testing.assert_allclose(got, _call(f, arrays, h), rtol=2e-6, atol=1e-7)
    assert traced._cache_size() == size, f"{name} compiled again for new hyperparameter values"


@pytest.mark.parametrize("name,f,data,hyper", HYPER_CASES, ids=[c[0] for c in HYPER_CASES])
def test_integer_hyperparameters_are_their_float_values(name, f, data, hyper):
    # `jax.jit(loss)(..., gamma=2)` traces the Python int as int32; it means 2.0.
    arrays = _f32(data)
    expected = _call(f, arrays, dict.fromkeys(hyper, 1.0))
    ones = dict.fromkeys(hyper, 1)
    _, got = _traced(name)(arrays, _samples(hyper, jnp.float32)[0], ones)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    concrete = _call(f, arrays, dict.fromkeys(hyper, jnp.int32(1)))
    np.testing.assert_allclose(concrete, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,f,data,hyper", HYPER_CASES, ids=[c[0] for c in HYPER_CASES])
def test_traced_hyperparameter_gradients(name, f, data, hyper, x64):
    # With respect to every hyperparameter and every differentiable input at once.
    differentiable = f.differentiable if isinstance(f, Loss) else (0,)

    def loss(floats, h):
        return _call(f, replaced(data, differentiable, floats), h)

    floats = tuple(jnp.asarray(data[i], jnp.float64) for i in differentiable)
    for h in _samples(hyper, jnp.float64):
        assert_derivatives_match_differences(loss, (floats, h))


def test_learned_temperature_is_differentiable():
    # Gradient descent on T recovers the teacher's sharpness: a learned temperature.
    teacher = jnp.asarray(TEACHER)

    def loss(log_t):
        return jaxce.distillation_loss(teacher / 3.0, teacher, temperature=jnp.exp(log_t))

    grad = jax.grad(loss)(jnp.float32(0.0))
    assert np.isfinite(grad) and grad != 0


@pytest.mark.parametrize(
    "loss", [loss for loss in LOSSES if loss.invalid], ids=lambda loss: loss.name
)
def test_traced_hyperparameter_out_of_range_is_nan_and_checkified(loss):
    arrays = _f32(loss.data(6, 5, seed=7))
    valid = {k: v[0] for k, v in loss.hyper.items()}
    traced = jax.jit(lambda h: loss(arrays, **h))
    checked = jax.jit(checkify.checkify(lambda h: loss(arrays, **h)))
    for name, values in loss.invalid.items():
        for bad in values:
            h = {**valid, name: bad}
            h32 = {k: jnp.float32(v) for k, v in h.items()}
            assert np.isnan(traced(h32)), (name, bad)
            err, _ = checked(h32)
            with pytest.raises(checkify.JaxRuntimeError, match=f"{name} must be .*; got {bad}"):
                err.throw()
            # The same value given concretely is rejected at trace time, naming it.
            with pytest.raises(ValueError, match=f"{name} must be"):
                loss(arrays, **h)


# Inputs of the tests of single options.

_RNG = np.random.default_rng(7)
X = _RNG.normal(size=(6, 5)).astype(np.float32) * 2
Y = _RNG.integers(0, 5, size=6).astype(np.int32)
TEACHER = _RNG.normal(size=(6, 5)).astype(np.float32)
H = _RNG.normal(size=(6, 4)).astype(np.float32)
KERNEL = _RNG.normal(size=(4, 5)).astype(np.float32)


def test_jit_of_a_transformed_loss_lowers_the_transformed_program():
    # `functools.wraps` (in `jax.grad` and `jax.jit`) copies a function's attributes onto
    # its wrapper: a loss with a `lower` of its own made this lower the bare loss.
    step = jax.jit(jax.value_and_grad(jaxce.softmax_cross_entropy))
    value, grad = step.lower(X, Y).compile()(X, Y)
    assert grad.shape == X.shape
    np.testing.assert_allclose(value, jaxce.softmax_cross_entropy(X, Y), rtol=1e-6)


def test_python_zero_skips_the_switched_off_term():
    # 0.0 compiles a program without the smoothing sums; any other value shares one program.
    f = jaxce.softmax_cross_entropy
    f(X, Y, label_smoothing=0.0)
    size = cache_size(f)
    for v in (0.1, 0.2, 0.3):
        f(X, Y, label_smoothing=v)
    assert cache_size(f) == size + 1


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: jaxce.softmax_cross_entropy(X, Y, axis=jnp.asarray(-1)), "axis"),
        (lambda: jaxce.softmax_cross_entropy(X, Y, ignore_index=np.array(0)), "ignore_index"),
        (
            lambda: jaxce.linear_softmax_cross_entropy(H, KERNEL, Y, chunk_size=jnp.int32(2)),
            "chunk_size",
        ),
        (lambda: jax.jit(lambda a: jaxce.entropy(X, axis=a))(0), "axis"),
        (
            lambda: jaxce.linear_distillation_loss(H, KERNEL, TEACHER, divergence=np.array("kl")),
            "divergence",
        ),
    ],
)
def test_static_option_given_an_array_names_it(call, name):
    with pytest.raises(TypeError, match=f"{name} is static"):
        call()


def test_option_classes_validate_like_the_function():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]; got 2.0"):
        jaxce.CrossEntropyLoss(label_smoothing=2.0)
    with pytest.raises(ValueError, match="gamma must be >= 0; got -1.0"):
        jaxce.FocalLoss(gamma=-1.0)
    with pytest.raises(TypeError, match="axis is static"):
        jaxce.CrossEntropyLoss(axis=np.array(1))
    # A concrete array hyperparameter is stored as a float: still hashable.
    criterion = jaxce.CrossEntropyLoss(label_smoothing=jnp.float32(0.25))
    assert criterion.label_smoothing == 0.25 and hash(criterion) == hash(criterion)


def test_help_shows_the_real_signature():
    signature = inspect.signature(jaxce.softmax_cross_entropy)
    assert list(signature.parameters)[:3] == ["logits", "labels", "axis"]
    assert signature.parameters["label_smoothing"].default == 0.0
    text = pydoc.render_doc(jaxce.softmax_cross_entropy, renderer=pydoc.plaintext)
    signature = r"softmax_cross_entropy\(\s*logits\b.*?,\s*labels\b.*?,\s*\*,\s*axis\b.*?= -1"
    assert re.search(signature, text, flags=re.S)
    assert "Softmax cross-entropy between logits and class labels" in text


# Binary labels outside [0, 1]: NaN in that element, a checkify error, nothing when masked.

BINARY_LABELED = [loss for loss in LOSSES if registry.BINARY in loss.inputs]


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("loss", BINARY_LABELED, ids=lambda loss: loss.name)
def test_binary_label_out_of_range_is_nan_and_checkified(loss, dtype):
    arrays = list(_f32(loss.data(4, 5, seed=3)))
    i = loss.inputs.index(registry.BINARY)
    labels = np.asarray(arrays[i] > 0.5, dtype)
    labels[1, 2], labels[3, 0] = 2, -1
    arrays[i] = jnp.asarray(labels)
    bad = np.zeros(labels.shape, bool)
    bad[1, 2] = bad[3, 0] = True

    def checked(f):
        return jax.jit(checkify.checkify(f))

    err, losses = checked(lambda a: loss(a, reduction="none"))(arrays)
    assert np.all(np.isnan(losses[bad])) and np.all(np.isfinite(losses[~bad]))
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must be in \[0, 1\]; got -?\d"):
        err.throw()
    # Masked, it is not an error.
    err, value = checked(lambda a: loss(a, where=~bad))(arrays)
    err.throw()
    assert np.isfinite(value)


# Layering: modules import only downward; no family reaches into another's privates.

LAYERS = [
    "_checks",
    "_sharding",
    "_numerics",
    "_labels",
    "_reduce",
    "_stats",
    "_rule",
    "_stream",
    "_options",
]
FAMILIES = {p.stem for p in PACKAGE.glob("_*.py")} - set(LAYERS) - {"__init__"}


def _imports(module):
    """(imported module, imported name or None) for every `from . import` in a module."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                if node.module is None:
                    found.append((alias.name, None))
                else:
                    found.append((node.module, alias.name))
    return tree, found


def test_family_modules_are_found():
    assert {"_softmax", "_binary", "_focal", "_divergence", "_linear", "_parallel"} <= FAMILIES


@pytest.mark.parametrize("module", LAYERS)
def test_lower_layers_import_only_below(module):
    _, found = _imports(module)
    below = set(LAYERS[: LAYERS.index(module)])
    assert {m for m, _ in found} <= below, (module, found)


def _family(module):
    """A family may span modules: `_calibration_fit` belongs to `_calibration`."""
    return module.split("_")[1]


@pytest.mark.parametrize("module", sorted(FAMILIES))
def test_family_imports_no_private_name_of_another_family(module):
    tree, found = _imports(module)
    others = {m for m in FAMILIES if _family(m) != _family(module)}
    for source, name in found:
        if source in others:
            assert name is not None and not name.startswith("_"), (module, source, name)
    # Nor `from . import _other` and then `_other._private`.
    aliases = {source for source, name in found if name is None and source in others}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in aliases:
                assert not node.attr.startswith("_"), (module, node.value.id, node.attr)
