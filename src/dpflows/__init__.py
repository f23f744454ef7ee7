"""dpflows: particle flows on probability measures in JAX, several with differential-privacy guarantees.

Public surface: the state (:class:`Particles`, :func:`resample`), the flow interface
(:class:`AbstractFlow`), the runtime (:func:`run`, :func:`sweep`, :func:`stack`, :class:`Trace`) and
the method modules as namespaces (``dpflows.langevin``, ``dpflows.potentials``, ...).
"""

from . import aeot, data, hopfield, kde, langevin, ldp, metrics, muon, nn, ot, potentials, privacy, shk, swf
from ._checkpoint import CheckpointError, FolderLockedError, ResumeMismatchError
from .flow import (
    AbstractFlow,
    BlackJAXFlow,
    FitResult,
    FlowError,
    FlowWarning,
    Trace,
    as_sampling_algorithm,
    fit,
    iterate,
    run,
    stack,
    sweep,
)
from .particles import Particles, resample

__version__ = "0.1.0"

__all__ = [
    "AbstractFlow",
    "BlackJAXFlow",
    "CheckpointError",
    "FitResult",
    "FlowError",
    "FlowWarning",
    "FolderLockedError",
    "Particles",
    "ResumeMismatchError",
    "Trace",
    "__version__",
    "aeot",
    "as_sampling_algorithm",
    "data",
    "fit",
    "hopfield",
    "iterate",
    "kde",
    "langevin",
    "ldp",
    "metrics",
    "muon",
    "nn",
    "ot",
    "potentials",
    "privacy",
    "resample",
    "run",
    "shk",
    "stack",
    "sweep",
    "swf",
]
