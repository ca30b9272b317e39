"""jaxce: cross-entropy losses for JAX with analytic gradients."""

from . import _help
from ._binary import BCEWithLogitsLoss as BCEWithLogitsLoss
from ._binary import binary_cross_entropy as binary_cross_entropy
from ._binary import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
from ._calibration import CalibrationCurve as CalibrationCurve
from ._calibration import bootstrap_calibration_error as bootstrap_calibration_error
from ._calibration import brier_score as brier_score
from ._calibration import calibration_curve as calibration_curve
from ._calibration import expected_calibration_error as expected_calibration_error
from ._calibration import fit_temperature as fit_temperature
from ._calibration import sigmoid_brier_score as sigmoid_brier_score
from ._calibration import sigmoid_calibration_error as sigmoid_calibration_error
from ._calibration_fit import fit_vector_scaling as fit_vector_scaling
from ._calibration_state import CalibrationState as CalibrationState
from ._contrastive import contrastive_cross_entropy as contrastive_cross_entropy
from ._contrastive import ntxent_loss as ntxent_loss
from ._contrastive import sigmoid_contrastive_loss as sigmoid_contrastive_loss
from ._divergence import distillation_loss as distillation_loss
from ._divergence import entropy as entropy
from ._divergence import jensen_shannon_divergence as jensen_shannon_divergence
from ._divergence import kl_divergence as kl_divergence
from ._divergence import reverse_kl_divergence as reverse_kl_divergence
from ._focal import FocalLoss as FocalLoss
from ._focal import poly1_cross_entropy as poly1_cross_entropy
from ._focal import sigmoid_focal_loss as sigmoid_focal_loss
from ._focal import softmax_focal_loss as softmax_focal_loss
from ._linear import linear_softmax_cross_entropy as linear_softmax_cross_entropy
from ._linear_distill import linear_distillation_loss as linear_distillation_loss
from ._parallel import vocab_parallel_softmax_cross_entropy as vocab_parallel_softmax_cross_entropy
from ._softmax import CrossEntropyLoss as CrossEntropyLoss
from ._softmax import log_softmax as log_softmax
from ._softmax import nll_loss as nll_loss
from ._softmax import smooth_labels as smooth_labels
from ._softmax import softmax as softmax
from ._softmax import softmax_cross_entropy as softmax_cross_entropy
from ._stats import CrossEntropyStats as CrossEntropyStats

__version__ = "0.1.0"

__all__ = [
    "BCEWithLogitsLoss",
    "CalibrationCurve",
    "CalibrationState",
    "CrossEntropyLoss",
    "CrossEntropyStats",
    "FocalLoss",
    "binary_cross_entropy",
    "bootstrap_calibration_error",
    "brier_score",
    "calibration_curve",
    "contrastive_cross_entropy",
    "distillation_loss",
    "entropy",
    "expected_calibration_error",
    "fit_temperature",
    "fit_vector_scaling",
    "jensen_shannon_divergence",
    "kl_divergence",
    "linear_distillation_loss",
    "linear_softmax_cross_entropy",
    "log_softmax",
    "nll_loss",
    "ntxent_loss",
    "poly1_cross_entropy",
    "reverse_kl_divergence",
    "sigmoid_binary_cross_entropy",
    "sigmoid_brier_score",
    "sigmoid_calibration_error",
    "sigmoid_contrastive_loss",
    "sigmoid_focal_loss",
    "smooth_labels",
    "softmax",
    "softmax_cross_entropy",
    "softmax_focal_loss",
    "vocab_parallel_softmax_cross_entropy",
]

# help() in a terminal: formulas and cross-references in plain text, long
# signatures one parameter a line. The site renders the source's docstrings.
_help.plain_help(globals()[name] for name in __all__)
