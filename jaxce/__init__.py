"""jaxce: cross-entropy losses for JAX with analytic gradients."""

from ._softmax import CrossEntropyLoss as CrossEntropyLoss
from ._softmax import log_softmax as log_softmax
from ._softmax import nll_loss as nll_loss
from ._softmax import smooth_labels as smooth_labels
from ._softmax import softmax as softmax
from ._softmax import softmax_cross_entropy as softmax_cross_entropy

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyLoss",
    "log_softmax",
    "nll_loss",
    "smooth_labels",
    "softmax",
    "softmax_cross_entropy",
]
