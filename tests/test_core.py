"""The core contract every loss shares: empty batches, traced hyperparameters, static
options, binary label checks, and the layering of the package's modules."""

import ast
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
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxce

PACKAGE = Path(jaxce.__file__).parent


def _vocab_parallel(x, y, **kw):
    mesh = jax.make_mesh((1,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = P(None, "vocab") if x.ndim == 2 else P("vocab")
    out_spec = P() if kw.get("reduction", "mean") != "none" else P(None)
    return jax.shard_map(
        lambda x, y: jaxce.vocab_parallel_softmax_cross_entropy(x, y, axis_name="vocab", **kw),
        mesh=mesh,
        in_specs=(spec, P(None) if y.ndim else P()),
        out_specs=out_spec,
    )(x, y)


def _linear(x, y, **kw):
    kernel = jnp.linspace(-1.0, 1.0, 4 * 5, dtype=x.dtype).reshape(4, 5)
    return jaxce.linear_softmax_cross_entropy(x, kernel, y, chunk_size=2, **kw)


def _linear_distill(x, y, **kw):
    kernel = jnp.linspace(-1.0, 1.0, 4 * 5, dtype=x.dtype).reshape(4, 5)
    teacher = jnp.zeros((x.shape[0], 5), x.dtype)
    options = {"alpha": 0.5, "divergence": "jsd", "chunk_size": 2, **kw}
    return jaxce.linear_distillation_loss(x, kernel, teacher, labels=y, **options)


# Empty batches: (loss, logits, labels, example shape).

_INT = np.zeros((0,), np.int32)
EMPTY = {
    "softmax_cross_entropy": (jaxce.softmax_cross_entropy, (0, 3), _INT, (0,)),
    "softmax_cross_entropy/axis1": (
        functools.partial(jaxce.softmax_cross_entropy, axis=1),
        (2, 3, 0, 7),
        np.zeros((2, 0, 7), np.int32),
        (2, 0, 7),
    ),
    "softmax_cross_entropy/probs": (
        functools.partial(jaxce.softmax_cross_entropy, label_smoothing=0.1),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0,),
    ),
    "nll_loss": (jaxce.nll_loss, (0, 3), _INT, (0,)),
    "poly1_cross_entropy": (jaxce.poly1_cross_entropy, (0, 3), _INT, (0,)),
    "softmax_focal_loss": (jaxce.softmax_focal_loss, (0, 3), _INT, (0,)),
    "CrossEntropyLoss": (jaxce.CrossEntropyLoss(weights=[1.0, 2.0, 3.0]), (0, 3), _INT, (0,)),
    "FocalLoss": (jaxce.FocalLoss(gamma=1.0), (0, 3), _INT, (0,)),
    "linear_softmax_cross_entropy": (_linear, (0, 4), _INT, (0,)),
    "linear_distillation_loss": (_linear_distill, (0, 4), _INT, (0,)),
    "vocab_parallel_softmax_cross_entropy": (_vocab_parallel, (0, 3), _INT, (0,)),
    "sigmoid_binary_cross_entropy": (
        jaxce.sigmoid_binary_cross_entropy,
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0, 3),
    ),
    "binary_cross_entropy": (
        lambda p, y, **kw: jaxce.binary_cross_entropy(jax.nn.sigmoid(p), y, **kw),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0, 3),
    ),
    "sigmoid_focal_loss": (
        jaxce.sigmoid_focal_loss,
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0, 3),
    ),
    "BCEWithLogitsLoss": (
        jaxce.BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0]),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0, 3),
    ),
    "kl_divergence": (jaxce.kl_divergence, (0, 3), np.zeros((0, 3), np.float32), (0,)),
    "distillation_loss": (
        functools.partial(jaxce.distillation_loss, temperature=2.0),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0,),
    ),
    "entropy": (lambda x, _, **kw: jaxce.entropy(x, **kw), (0, 3), None, (0,)),
    "jensen_shannon_divergence": (
        functools.partial(jaxce.jensen_shannon_divergence, beta=0.3, temperature=2.0),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0,),
    ),
    "jensen_shannon_divergence/beta0": (
        functools.partial(jaxce.jensen_shannon_divergence, beta=0.0),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0,),
    ),
    "reverse_kl_divergence": (
        functools.partial(jaxce.reverse_kl_divergence, temperature=2.0),
        (0, 3),
        np.zeros((0, 3), np.float32),
        (0,),
    ),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_batch_is_zero_with_zero_gradient(name, reduction):
    loss, shape, labels, example_shape = EMPTY[name]
    logits = jnp.zeros(shape, jnp.float32)
    value = loss(logits, labels, reduction=reduction)
    expected_shape = example_shape if reduction == "none" else ()
    assert value.shape == expected_shape and value.dtype == jnp.float32
    assert np.all(np.asarray(value) == 0)
    grad = jax.grad(lambda x: jnp.sum(loss(x, labels, reduction=reduction)))(logits)
    assert grad.shape == logits.shape and grad.dtype == logits.dtype


# Traced hyperparameters: (loss of (logits, hyperparameter value), name, values).

_RNG = np.random.default_rng(7)
X = _RNG.normal(size=(6, 5)).astype(np.float32) * 2
Y = _RNG.integers(0, 5, size=6).astype(np.int32)
PROBS = (lambda p: p / p.sum(-1, keepdims=True))(_RNG.random((6, 5)) ** 2).astype(np.float32)
BINARY = (_RNG.random((6, 5)) < 0.4).astype(np.float32)
TEACHER = _RNG.normal(size=(6, 5)).astype(np.float32)
W = np.linspace(0.5, 2.0, 5).astype(np.float32)
H = _RNG.normal(size=(6, 4)).astype(np.float32)
KERNEL = _RNG.normal(size=(4, 5)).astype(np.float32)


def _cast(*arrays):
    dtype = jnp.result_type(float)
    return [jnp.asarray(a, dtype) for a in arrays]


HYPER = {
    "ce/label_smoothing": (
        lambda x, v: jaxce.softmax_cross_entropy(x, Y, weights=_cast(W)[0], label_smoothing=v),
        "label_smoothing",
        (0.05, 0.3, 0.9),
    ),
    "ce/z_loss": (
        lambda x, v: jaxce.softmax_cross_entropy(x, Y, z_loss=v, label_smoothing=0.2),
        "z_loss",
        (1e-3, 0.5),
    ),
    "ce-probs/label_smoothing": (
        lambda x, v: jaxce.softmax_cross_entropy(x, _cast(PROBS)[0], label_smoothing=v, z_loss=v),
        "label_smoothing",
        (0.1, 0.6),
    ),
    "bce/label_smoothing": (
        lambda x, v: jaxce.sigmoid_binary_cross_entropy(
            x, _cast(BINARY)[0], pos_weight=_cast(W)[0], label_smoothing=v
        ),
        "label_smoothing",
        (0.1, 0.4),
    ),
    "sigmoid_focal/gamma": (
        lambda x, v: jaxce.sigmoid_focal_loss(x, _cast(BINARY)[0], gamma=v),
        "gamma",
        (0.5, 1.0, 2.5),
    ),
    "sigmoid_focal/alpha": (
        lambda x, v: jaxce.sigmoid_focal_loss(x, _cast(BINARY)[0], alpha=v, gamma=1.5),
        "alpha",
        (0.05, 0.25, 0.9),
    ),
    "softmax_focal/gamma": (
        lambda x, v: jaxce.softmax_focal_loss(x, Y, gamma=v, weights=_cast(W)[0]),
        "gamma",
        (0.5, 2.0),
    ),
    "poly1/epsilon": (
        lambda x, v: jaxce.poly1_cross_entropy(x, Y, epsilon=v, weights=_cast(W)[0]),
        "epsilon",
        (-0.5, 1.0, 3.0),
    ),
    "poly1/label_smoothing": (
        lambda x, v: jaxce.poly1_cross_entropy(x, _cast(PROBS)[0], label_smoothing=v),
        "label_smoothing",
        (0.1, 0.5),
    ),
    "distillation/temperature": (
        lambda x, v: jaxce.distillation_loss(x, _cast(TEACHER)[0], temperature=v),
        "temperature",
        (0.5, 2.0, 4.0),
    ),
    "jsd/beta": (
        lambda x, v: jaxce.jensen_shannon_divergence(x, _cast(TEACHER)[0], beta=v, temperature=2.0),
        "beta",
        (0.1, 0.5, 0.9),
    ),
    "jsd/temperature": (
        lambda x, v: jaxce.jensen_shannon_divergence(x, _cast(TEACHER)[0], beta=0.3, temperature=v),
        "temperature",
        (0.5, 2.0, 4.0),
    ),
    "reverse_kl/temperature": (
        lambda x, v: jaxce.reverse_kl_divergence(x, _cast(TEACHER)[0], temperature=v),
        "temperature",
        (0.5, 2.0, 4.0),
    ),
    "linear/label_smoothing": (
        lambda x, v: jaxce.linear_softmax_cross_entropy(
            _cast(H)[0], x[:4], Y, chunk_size=2, label_smoothing=v
        ),
        "label_smoothing",
        (0.1, 0.7),
    ),
    "linear/z_loss": (
        lambda x, v: jaxce.linear_softmax_cross_entropy(
            _cast(H)[0], x[:4], Y, chunk_size=2, z_loss=v
        ),
        "z_loss",
        (1e-2, 0.3),
    ),
    "linear/logit_softcap": (
        lambda x, v: jaxce.linear_softmax_cross_entropy(
            _cast(H)[0], x[:4], Y, chunk_size=3, logit_softcap=v, label_smoothing=0.1
        ),
        "logit_softcap",
        (1.5, 5.0),
    ),
    "ce/logit_softcap": (
        lambda x, v: jaxce.softmax_cross_entropy(
            x, Y, weights=_cast(W)[0], logit_softcap=v, label_smoothing=0.1
        ),
        "logit_softcap",
        (0.5, 2.0),
    ),
    "ce-probs/logit_softcap": (
        lambda x, v: jaxce.softmax_cross_entropy(x, _cast(PROBS)[0], logit_softcap=v),
        "logit_softcap",
        (0.5, 2.0),
    ),
    "vocab_parallel/logit_softcap": (
        lambda x, v: _vocab_parallel(x, Y, logit_softcap=v, z_loss=1e-2),
        "logit_softcap",
        (0.5, 2.0),
    ),
    "linear_distill/beta": (
        lambda x, v: jaxce.linear_distillation_loss(
            _cast(H)[0],
            x[:4],
            _cast(TEACHER)[0],
            divergence="jsd",
            beta=v,
            temperature=2.0,
            labels=Y,
            alpha=0.3,
            chunk_size=2,
        ),
        "beta",
        (0.1, 0.5, 0.9),
    ),
    "linear_distill/temperature": (
        lambda x, v: jaxce.linear_distillation_loss(
            _cast(H)[0],
            x[:4],
            _cast(TEACHER)[0],
            divergence="reverse_kl",
            temperature=v,
            labels=Y,
            alpha=0.3,
            chunk_size=3,
        ),
        "temperature",
        (0.5, 2.0, 4.0),
    ),
    "linear_distill/alpha": (
        lambda x, v: jaxce.linear_distillation_loss(
            _cast(H)[0], x[:4], _cast(TEACHER)[0], temperature=2.0, labels=Y, alpha=v, chunk_size=2
        ),
        "alpha",
        (0.1, 0.5, 0.9),
    ),
    "vocab_parallel/label_smoothing": (
        lambda x, v: _vocab_parallel(x, Y, label_smoothing=v, z_loss=v / 10),
        "label_smoothing",
        (0.1, 0.8),
    ),
    "smooth_labels/epsilon": (
        lambda x, v: jnp.sum(jaxce.smooth_labels(jax.nn.one_hot(Y, 5, dtype=x.dtype), v) * x),
        "epsilon",
        (0.1, 0.5),
    ),
    "log_softmax/temperature": (
        lambda x, v: jnp.sum(jaxce.log_softmax(x, temperature=v)[:, 0]),
        "temperature",
        (0.5, 3.0),
    ),
}


@pytest.mark.parametrize("case", sorted(HYPER))
def test_traced_hyperparameter_compiles_once_and_equals_python_number(case):
    loss, _, values = HYPER[case]
    x = jnp.asarray(X)
    traced = jax.jit(loss)
    for v in values:
        np.testing.assert_allclose(traced(x, jnp.float32(v)), loss(x, v), rtol=2e-6, atol=1e-7)
    assert traced._cache_size() == 1


@pytest.mark.parametrize("case", sorted(HYPER))
def test_integer_hyperparameter_is_its_float_value(case):
    # `jax.jit(loss)(..., gamma=2)` traces the Python int as int32; it means 2.0.
    loss, _, _ = HYPER[case]
    x = jnp.asarray(X)
    expected = loss(x, 1.0)
    np.testing.assert_allclose(jax.jit(loss)(x, 1), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loss(x, jnp.int32(1)), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", sorted(HYPER))
def test_traced_hyperparameter_gradient(case, x64):
    loss, _, values = HYPER[case]
    x = jnp.asarray(X, jnp.float64)
    for v in values:
        check_grads(lambda v: loss(x, v), (jnp.float64(v),), order=1, modes=["rev"])
    # The logits' gradient still holds with a traced hyperparameter.
    check_grads(lambda x: loss(x, jnp.float64(values[-1])), (x,), order=1, modes=["rev"])


def test_learned_temperature_is_differentiable():
    # Gradient descent on T recovers the teacher's sharpness: a learned temperature.
    teacher = jnp.asarray(TEACHER)

    def loss(log_t):
        return jaxce.distillation_loss(teacher / 3.0, teacher, temperature=jnp.exp(log_t))

    grad = jax.grad(loss)(jnp.float32(0.0))
    assert np.isfinite(grad) and grad != 0


TRACED_OUT_OF_RANGE = [
    ("label_smoothing", lambda v: jaxce.softmax_cross_entropy(X, Y, label_smoothing=v), 1.5),
    ("z_loss", lambda v: jaxce.softmax_cross_entropy(X, Y, z_loss=v), -1.0),
    ("gamma", lambda v: jaxce.softmax_focal_loss(X, Y, gamma=v), -0.5),
    ("alpha", lambda v: jaxce.sigmoid_focal_loss(X, BINARY, alpha=v), 2.0),
    ("epsilon", lambda v: jaxce.poly1_cross_entropy(X, Y, epsilon=v), -2.0),
    ("temperature", lambda v: jaxce.distillation_loss(X, TEACHER, temperature=v), 0.0),
    ("beta", lambda v: jaxce.jensen_shannon_divergence(X, TEACHER, beta=v), 1.5),
    ("beta", lambda v: jaxce.jensen_shannon_divergence(X, TEACHER, beta=v), -0.5),
    ("temperature", lambda v: jaxce.jensen_shannon_divergence(X, TEACHER, temperature=v), -1.0),
    ("temperature", lambda v: jaxce.reverse_kl_divergence(X, TEACHER, temperature=v), 0.0),
    ("logit_softcap", lambda v: _linear(H, Y, logit_softcap=v), -1.0),
    ("beta", lambda v: _linear_distill(H, Y, beta=v), 1.5),
    ("alpha", lambda v: _linear_distill(H, Y, alpha=v), -0.5),
    ("temperature", lambda v: _linear_distill(H, Y, temperature=v), 0.0),
]


@pytest.mark.parametrize("name,loss,bad", TRACED_OUT_OF_RANGE)
def test_traced_hyperparameter_out_of_range_is_nan_and_checkified(name, loss, bad):
    assert np.isnan(jax.jit(loss)(jnp.float32(bad)))
    err, _ = checkify.checkify(jax.jit(loss))(jnp.float32(bad))
    with pytest.raises(checkify.JaxRuntimeError, match=f"{name} must be .*; got {bad}"):
        err.throw()
    # The same value given concretely is rejected at trace time, naming it.
    with pytest.raises(ValueError, match=f"{name} must be"):
        loss(bad)


def test_python_zero_skips_the_switched_off_term():
    # 0.0 compiles a program without the smoothing sums; any other value shares one program.
    f = jaxce.softmax_cross_entropy
    f(X, Y, label_smoothing=0.0)
    size = f._cache_size()
    for v in (0.1, 0.2, 0.3):
        f(X, Y, label_smoothing=v)
    assert f._cache_size() == size + 1


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


# Binary labels outside [0, 1].

BINARY_LOSSES = {
    "sigmoid_binary_cross_entropy": jaxce.sigmoid_binary_cross_entropy,
    "binary_cross_entropy": lambda x, y, **kw: jaxce.binary_cross_entropy(
        jax.nn.sigmoid(x), y, **kw
    ),
    "sigmoid_focal_loss": jaxce.sigmoid_focal_loss,
}


@pytest.mark.parametrize("bad", [2.0, -1.0, 2, -1])
@pytest.mark.parametrize("name", sorted(BINARY_LOSSES))
def test_binary_label_out_of_range_is_nan_and_checkified(name, bad):
    loss = BINARY_LOSSES[name]
    labels = BINARY.astype(type(bad) if isinstance(bad, int) else np.float32)
    labels[1, 2] = bad
    losses = np.asarray(loss(X, labels, reduction="none"))
    assert np.isnan(losses[1, 2])
    assert np.all(np.isfinite(np.delete(losses.ravel(), 1 * 5 + 2)))
    err, _ = checkify.checkify(jax.jit(loss))(X, labels)
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must be in \[0, 1\]; got -?\d"):
        err.throw()
    # Masked, it is not an error.
    where = np.ones(labels.shape, bool)
    where[1, 2] = False
    err, value = checkify.checkify(jax.jit(loss))(X, labels, where=where)
    err.throw()
    assert np.isfinite(value)


# Layering: modules import only downward; no family reaches into another's privates.

LAYERS = ["_checks", "_sharding", "_numerics", "_labels", "_reduce", "_stats", "_rule", "_options"]
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
