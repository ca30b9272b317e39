"""Every public loss, declared once, for the tests that hold all of them to one contract.

An entry says how to call a loss, how to draw its inputs at a small shape, which of its
options are float hyperparameters (with values inside and outside their range), and which
float64 oracle of `tests/reference.py` it must match. The empty-batch, traced-hyperparameter,
option-class (`test_core`), example-weight, forward-mode and sharding tests build their cases
from `LOSSES`; `test_core` fails for a public name that is neither here nor in `NOT_LOSSES`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

import jaxce
from tests import reference as ref

IGNORE = -100  # the ignored label of every loss with integer labels
HIDDEN_WIDTH, TEACHER_WIDTH = 3, 2  # of the fused heads' hidden states
NOT_FINITE = (np.inf, np.nan, -np.inf)


@dataclasses.dataclass(frozen=True)
class Input:
    """One kind of array input.

    `draw(rng, n, k)` gives it in float64 (or integer labels) for n examples of k classes;
    `spec` places it on a ("data", "vocab") mesh; `garbage` fills the row of an example the
    tests exclude (None for an input that has no rows, such as a kernel). The loss's
    gradient with respect to a `differentiable` input is exact; to any other, zero.
    """

    draw: Callable[[np.random.Generator, int, int], np.ndarray]
    spec: P
    garbage: tuple | None = None
    differentiable: bool = True


def _labels(rng, n, k):
    y = rng.integers(0, k, n)
    y[1:2] = IGNORE  # the second example, where there is one
    return y


def _probs(rng, n, k):
    p = rng.random((n, k)) ** 2
    return p / p.sum(-1, keepdims=True)


def _logits(rng, n, k):
    return rng.normal(size=(n, k)) * 2


EXAMPLES, CLASSES = P("data", "vocab"), P("vocab")
LOGITS = Input(_logits, EXAMPLES, NOT_FINITE)
TEACHER = Input(_logits, EXAMPLES, NOT_FINITE)  # a teacher's logits
LABELS = Input(_labels, P("data"), (999,), differentiable=False)  # integer, one ignored
PROBS = Input(_probs, EXAMPLES, (np.nan,))  # rows of probabilities, some small
LOG_PROBS = Input(lambda rng, n, k: ref.log_softmax(_logits(rng, n, k)), EXAMPLES, NOT_FINITE)
BINARY = Input(lambda rng, n, k: rng.random((n, k)), EXAMPLES, (2.0,))  # soft, in [0, 1)
SIGMOIDS = Input(lambda rng, n, k: rng.uniform(0.05, 0.95, (n, k)), EXAMPLES, (np.nan, 2.0))
HIDDEN = Input(lambda rng, n, k: rng.normal(size=(n, HIDDEN_WIDTH)), P("data"), NOT_FINITE)
KERNEL = Input(lambda rng, n, k: rng.normal(size=(HIDDEN_WIDTH, k)), P(None, "vocab"))
KERNEL_VD = Input(lambda rng, n, k: rng.normal(size=(k, HIDDEN_WIDTH)), P("vocab", None))
# The fused heads hold their teacher constant.
FIXED_TEACHER = Input(_logits, EXAMPLES, NOT_FINITE, differentiable=False)
TEACHER_HIDDEN = Input(
    lambda rng, n, k: rng.normal(size=(n, TEACHER_WIDTH)), P("data"), NOT_FINITE, False
)
TEACHER_KERNEL_VD = Input(
    lambda rng, n, k: rng.normal(size=(k, TEACHER_WIDTH)), P("vocab", None), None, False
)
CLASS_WEIGHTS = Input(lambda rng, n, k: rng.uniform(0.5, 2.0, k), CLASSES)
POS_WEIGHT = Input(lambda rng, n, k: rng.uniform(0.5, 3.0, k), CLASSES)
BIAS = Input(lambda rng, n, k: np.linspace(-1.0, 1.0, k), CLASSES)
# Contrastive towers: `a` and its positives `b` (row i of each a pair); a gallery of k rows
# of `b` with labels into it; NT-Xent's views, two per pair. All split over the batch (inside
# shard_map, over `axis_name`: `tests/sharding_checks.py`).
TOWER = Input(lambda rng, n, k: rng.normal(size=(n, HIDDEN_WIDTH)), P("data"), NOT_FINITE)
GALLERY = Input(lambda rng, n, k: rng.normal(size=(k, HIDDEN_WIDTH)), P("data"))
GALLERY_LABELS = Input(lambda rng, n, k: rng.integers(0, k, n), P("data"), (999,), False)
VIEWS = Input(lambda rng, n, k: rng.normal(size=(n - n % 2, HIDDEN_WIDTH)), P("data"), NOT_FINITE)


@dataclasses.dataclass(frozen=True)
class Loss:
    """One public loss, or one more way of calling it (named `"<loss>/<variant>"`).

    It is called as `fn(*inputs, **keywords, **options, **static, **kw)`, the tests giving
    `where`, `reduction`, `example_weights`, `denominator`, `autodiff` or hyperparameters
    in `kw`; its oracle as `oracle(*inputs, **keywords, **options, **kw)` in float64.
    """

    name: str
    fn: Callable
    inputs: tuple[Input, ...]  # the positional arrays
    keywords: dict[str, Input] = dataclasses.field(default_factory=dict)  # arrays by keyword
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the oracle's too
    static: dict[str, Any] = dataclasses.field(default_factory=dict)  # jaxce's alone
    # Float hyperparameters, traced together in the hyperparameter and forward-mode tests
    # (overriding `options`): valid values, the first the forward-mode tests', and values
    # out of range.
    hyper: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    invalid: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    oracle: Callable | None = None
    elementwise: bool = False  # its examples are the (n, k) elements, not the n rows
    denominator: bool = False  # takes `denominator=`
    forward: bool = True  # takes `autodiff="forward"`
    stats: bool = False  # takes `return_stats=True`
    criterion: type | None = None  # the option class that holds its options
    axis_name: bool = False  # also inside shard_map: classes (or a batch) split over `axis_name`
    placed: bool = True  # takes whole arrays (else only inside shard_map: see `one_device`)
    pairs: bool = False  # its examples are the rows of n // 2 positive pairs (2 * (n // 2))
    # its examples enter each other's loss (as negatives): the loss jumps where a weight
    # reaches 0, which takes the example out of the batch as where=False does
    coupled: bool = False

    @property
    def public(self) -> str:
        return self.name.split("/")[0]

    @property
    def arrays(self) -> tuple[Input, ...]:
        return self.inputs + tuple(self.keywords.values())

    @property
    def differentiable(self) -> tuple[int, ...]:
        """Positions in `data()` of the differentiable arrays."""
        return tuple(i for i, a in enumerate(self.arrays) if a.differentiable)

    def example_shape(self, n: int, k: int) -> tuple[int, ...]:
        if self.pairs:
            return (n - n % 2,)
        return (n, k) if self.elementwise else (n,)

    def data(self, n: int, k: int, seed: int = 0, garbage: int | None = None) -> tuple:
        """Every array input, positional then keyword, for n examples of k classes; with
        `garbage`, that example's rows hold inf, NaN or an invalid label."""
        rng = np.random.default_rng(seed)
        arrays = []
        for kind in self.arrays:
            a = np.array(kind.draw(rng, n, k))
            if garbage is not None and kind.garbage is not None:
                a[garbage] = np.resize(kind.garbage, a[garbage].shape)
            arrays.append(a)
        return tuple(arrays)

    def _split(self, arrays):
        n = len(self.inputs)
        return arrays[:n], dict(zip(self.keywords, arrays[n:], strict=True))

    def __call__(self, arrays, **kw):
        args, keywords = self._split(arrays)
        fn = self.fn if self.placed else one_device(self.fn)
        return fn(*args, **keywords, **{**self.options, **self.static, **kw})

    def reference(self, arrays, **kw):
        assert self.oracle is not None, f"{self.name} has no oracle"
        args, keywords = self._split(arrays)
        return self.oracle(*args, **keywords, **{**self.options, **kw})


def one_device(fn):
    """`fn(logits, ...)` inside `shard_map` over a one-device "vocab" mesh: called like the
    losses of whole arrays (the sharding checks split it over devices)."""

    def call(logits, *args, **kw):
        mesh = jax.make_mesh((1,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))

        def local(logits):
            return fn(logits, *args, axis_name="vocab", **kw)

        return jax.shard_map(local, mesh=mesh, in_specs=P(None, "vocab"), out_specs=P())(logits)

    call.__name__ = fn.__name__
    return call


_CE = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=0.01)
_CE_HYPER = dict(label_smoothing=(0.05, 0.3, 0.9), z_loss=(1e-3, 0.5), logit_softcap=(2.0, 0.5))
_CE_INVALID = dict(label_smoothing=(1.5,), z_loss=(-1.0,), logit_softcap=(-1.0,))

LOSSES = [
    Loss(
        "softmax_cross_entropy",
        jaxce.softmax_cross_entropy,
        (LOGITS, LABELS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=_CE,
        hyper=_CE_HYPER,
        invalid=_CE_INVALID,
        oracle=ref.softmax_cross_entropy,
        denominator=True,
        stats=True,
        criterion=jaxce.CrossEntropyLoss,
    ),
    Loss(
        "softmax_cross_entropy/probs",
        jaxce.softmax_cross_entropy,
        (LOGITS, PROBS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=dict(label_smoothing=0.2),
        hyper=_CE_HYPER,
        oracle=ref.softmax_cross_entropy,
        denominator=True,
    ),
    Loss(
        "nll_loss",
        jaxce.nll_loss,
        (LOG_PROBS, LABELS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=dict(ignore_index=IGNORE),
        oracle=ref.nll_loss,
        denominator=True,
    ),
    Loss(
        "softmax_focal_loss",
        jaxce.softmax_focal_loss,
        (LOGITS, LABELS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=dict(gamma=1.5, ignore_index=IGNORE),
        hyper=dict(gamma=(1.5, 0.5, 2.0)),
        invalid=dict(gamma=(-0.5,)),
        oracle=ref.softmax_focal_loss,
        criterion=jaxce.FocalLoss,
    ),
    Loss(
        "poly1_cross_entropy",
        jaxce.poly1_cross_entropy,
        (LOGITS, LABELS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=dict(epsilon=2.0, label_smoothing=0.1, ignore_index=IGNORE),
        hyper=dict(epsilon=(0.3, -0.5, 3.0), label_smoothing=(0.1, 0.5)),
        invalid=dict(epsilon=(-2.0,)),
        oracle=ref.poly1_cross_entropy,
    ),
    Loss(
        "poly1_cross_entropy/probs",
        jaxce.poly1_cross_entropy,
        (LOGITS, PROBS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=dict(epsilon=2.0, label_smoothing=0.1),
        hyper=dict(epsilon=(0.3, 1.0), label_smoothing=(0.1, 0.5)),
        oracle=ref.poly1_cross_entropy,
    ),
    Loss("kl_divergence", jaxce.kl_divergence, (LOGITS, PROBS), oracle=ref.kl_divergence),
    Loss("entropy", jaxce.entropy, (LOGITS,), oracle=ref.entropy),
    Loss(
        "distillation_loss",
        jaxce.distillation_loss,
        (LOGITS, TEACHER),
        options=dict(temperature=2.0),
        hyper=dict(temperature=(1.3, 0.5, 4.0)),
        invalid=dict(temperature=(0.0,)),
        oracle=ref.distillation_loss,
    ),
    Loss(
        "jensen_shannon_divergence",
        jaxce.jensen_shannon_divergence,
        (LOGITS, TEACHER),
        options=dict(beta=0.3, temperature=2.0),
        hyper=dict(beta=(0.3, 0.1, 0.9), temperature=(1.7, 0.5, 4.0)),
        invalid=dict(beta=(1.5, -0.5), temperature=(-1.0,)),
        oracle=ref.jensen_shannon_divergence,
    ),
    # beta = 0 and 1 are the forward and reverse KL, each its own program.
    Loss(
        "jensen_shannon_divergence/beta0",
        jaxce.jensen_shannon_divergence,
        (LOGITS, TEACHER),
        options=dict(beta=0.0, temperature=2.0),
        oracle=ref.jensen_shannon_divergence,
    ),
    Loss(
        "jensen_shannon_divergence/beta1",
        jaxce.jensen_shannon_divergence,
        (LOGITS, TEACHER),
        options=dict(beta=1.0, temperature=2.0),
        oracle=ref.jensen_shannon_divergence,
    ),
    Loss(
        "reverse_kl_divergence",
        jaxce.reverse_kl_divergence,
        (LOGITS, TEACHER),
        options=dict(temperature=2.0),
        hyper=dict(temperature=(1.3, 0.5, 4.0)),
        invalid=dict(temperature=(0.0,)),
        oracle=ref.reverse_kl_divergence,
    ),
    Loss(
        "linear_softmax_cross_entropy",
        jaxce.linear_softmax_cross_entropy,
        (HIDDEN, KERNEL, LABELS),
        keywords=dict(bias=BIAS, weights=CLASS_WEIGHTS),
        options=_CE,
        static=dict(chunk_size=3),
        hyper=dict(label_smoothing=(0.1, 0.7), z_loss=(1e-2, 0.3), logit_softcap=(5.0, 1.5)),
        invalid=dict(logit_softcap=(-1.0,)),
        oracle=ref.linear_softmax_cross_entropy,
        denominator=True,
        forward=False,
        stats=True,
        axis_name=True,
    ),
    # The kernel in the (V, D) layout, split over the vocabulary along its first axis.
    Loss(
        "linear_softmax_cross_entropy/vd",
        jaxce.linear_softmax_cross_entropy,
        (HIDDEN, KERNEL_VD, LABELS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=dict(kernel_layout="VD", ignore_index=IGNORE, label_smoothing=0.1),
        static=dict(chunk_size=3),
        oracle=ref.linear_softmax_cross_entropy,
        denominator=True,
        forward=False,
    ),
    Loss(
        "linear_distillation_loss",
        jaxce.linear_distillation_loss,
        (HIDDEN, KERNEL, FIXED_TEACHER),
        keywords=dict(labels=LABELS),
        options=dict(divergence="kl", alpha=0.3, temperature=2.0, ignore_index=IGNORE),
        static=dict(chunk_size=3),
        hyper=dict(temperature=(0.5, 2.0, 4.0), alpha=(0.1, 0.5, 0.9)),
        invalid=dict(alpha=(-0.5,), temperature=(0.0,)),
        oracle=ref.linear_distillation_loss,
        denominator=True,
        forward=False,
    ),
    # The Jensen-Shannon divergence takes a second pass over the vocabulary.
    Loss(
        "linear_distillation_loss/jsd",
        jaxce.linear_distillation_loss,
        (HIDDEN, KERNEL, FIXED_TEACHER),
        keywords=dict(labels=LABELS),
        options=dict(divergence="jsd", alpha=0.3, temperature=2.0, ignore_index=IGNORE),
        static=dict(chunk_size=3),
        hyper=dict(beta=(0.1, 0.5, 0.9), temperature=(0.5, 2.0, 4.0), alpha=(0.1, 0.5, 0.9)),
        invalid=dict(beta=(1.5,), alpha=(-0.5,), temperature=(0.0,)),
        oracle=ref.linear_distillation_loss,
        denominator=True,
        forward=False,
        axis_name=True,
    ),
    # The teacher as hidden states and a kernel, both kernels in the (V, D) layout.
    Loss(
        "linear_distillation_loss/teacher_kernel",
        jaxce.linear_distillation_loss,
        (HIDDEN, KERNEL_VD, TEACHER_HIDDEN),
        keywords=dict(teacher_kernel=TEACHER_KERNEL_VD),
        options=dict(divergence="reverse_kl", temperature=2.0, kernel_layout="VD"),
        static=dict(chunk_size=3),
        hyper=dict(temperature=(0.5, 2.0, 4.0)),
        oracle=ref.linear_distillation_loss,
        denominator=True,
        forward=False,
    ),
    Loss(
        "vocab_parallel_softmax_cross_entropy",
        jaxce.vocab_parallel_softmax_cross_entropy,
        (LOGITS, LABELS),
        keywords=dict(weights=CLASS_WEIGHTS),
        options=_CE,
        hyper=_CE_HYPER,
        oracle=ref.softmax_cross_entropy,
        denominator=True,
        stats=True,
        axis_name=True,
        placed=False,
    ),
    Loss(
        "sigmoid_binary_cross_entropy",
        jaxce.sigmoid_binary_cross_entropy,
        (LOGITS, BINARY),
        keywords=dict(weights=CLASS_WEIGHTS, pos_weight=POS_WEIGHT),
        options=dict(label_smoothing=0.1),
        hyper=dict(label_smoothing=(0.1, 0.4)),
        invalid=dict(label_smoothing=(1.5,)),
        oracle=ref.sigmoid_binary_cross_entropy,
        elementwise=True,
        criterion=jaxce.BCEWithLogitsLoss,
    ),
    Loss(
        "binary_cross_entropy",
        jaxce.binary_cross_entropy,
        (SIGMOIDS, BINARY),
        keywords=dict(weights=CLASS_WEIGHTS),
        oracle=ref.binary_cross_entropy,
        elementwise=True,
    ),
    Loss(
        "sigmoid_focal_loss",
        jaxce.sigmoid_focal_loss,
        (LOGITS, BINARY),
        options=dict(alpha=0.25, gamma=1.5),
        hyper=dict(gamma=(1.5, 0.5, 2.5), alpha=(0.25, 0.05, 0.9)),
        invalid=dict(alpha=(2.0,)),
        oracle=ref.sigmoid_focal_loss,
        elementwise=True,
    ),
]


def _contrastive(name, inputs, hyper=None, **kw):
    """A contrastive loss: streamed in chunks of 3 rows of b, its examples coupled."""
    public = name.split("/")[0]
    hyper = hyper or {}
    return Loss(
        name,
        getattr(jaxce, public),
        inputs,
        static=dict(chunk_size=3),
        hyper=hyper,
        invalid={"temperature": (0.0, -1.0)} if "temperature" in hyper else {},
        oracle=getattr(ref, public),
        forward=False,
        axis_name=True,
        coupled=True,
        **kw,
    )


TEMPERATURES = (0.7, 0.4, 2.0)
# A gallery of k rows of b (M != N) with labels into it; symmetric=False and SigLIP's labels
# take the same path (`tests/test_contrastive.py` holds each to the oracle).
LOSSES += [
    _contrastive(
        "contrastive_cross_entropy",
        (TOWER, TOWER),
        dict(temperature=TEMPERATURES, bias=(0.3, -2.0)),
        options=dict(temperature=0.5, bias=0.3),
    ),
    _contrastive(
        "contrastive_cross_entropy/labels",
        (TOWER, GALLERY),
        keywords=dict(labels=GALLERY_LABELS),
        options=dict(temperature=0.5),
    ),
    _contrastive(
        "ntxent_loss",
        (VIEWS,),
        dict(temperature=TEMPERATURES),
        options=dict(temperature=0.5),
        pairs=True,
    ),
    _contrastive(
        "sigmoid_contrastive_loss",
        (TOWER, TOWER),
        dict(temperature=TEMPERATURES, bias=(-1.0, 0.5)),
        options=dict(temperature=0.5, bias=-1.0),
    ),
]
BY_NAME = {loss.name: loss for loss in LOSSES}
assert len(BY_NAME) == len(LOSSES), "two entries share a name"

# Public names that are neither losses nor their option classes (each the `criterion` of an
# entry): statistics, label and probability helpers. Calibration measures take no gradient
# and have their own tests, sharding included.
NOT_LOSSES = {"CrossEntropyStats", "log_softmax", "smooth_labels", "softmax"}
CALIBRATION = {n for n in jaxce.__all__ if getattr(jaxce, n).__module__.startswith("jaxce._calib")}
