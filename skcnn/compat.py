"""The private scikit-learn helpers skcnn uses, imported in this one place.

They are what scikit-learn's own estimators use to validate parameters
(``_parameter_constraints``) and to run ``fit`` in the right configuration.
Being private, they may move between releases: ``pyproject.toml`` states
the scikit-learn versions these imports are known to work with, and a new
release needs only this module checked.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight

__all__ = ["HasMethods", "Interval", "StrOptions", "_check_sample_weight", "_fit_context"]
