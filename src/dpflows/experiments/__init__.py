"""Experiment kinds, each driven by a config: ``dpflows run configs/X.yaml --out runs/X``.

A config is a flat mapping: ``experiment`` (the kind), ``seed``, and the keyword arguments of the
kind's config dataclass. Unknown keys are errors naming the key. A kind is registered by the module
that owns it with :func:`register`; experiments use only what ``dpflows`` exports.
"""

from __future__ import annotations

# Importing a module registers its experiments.
from . import (  # noqa: F401  (registration)  # noqa: F401  (registration side effect)
    aeot_generative,
    hopfield_memory,
    langevin_gaussian,
    ldp_generative,
    muon_meanfield,
    shk_mixture,
    shk_private_regression,
    swf_generative,
)
from ._registry import (
    Experiment,
    RunContext,
    SweepPlan,
    get,
    load_config,
    names,
    parse_value,
    plan_sweep,
    read_about,
    register,
    run_experiment,
    run_sweep,
)

__all__ = [
    "Experiment",
    "RunContext",
    "SweepPlan",
    "get",
    "load_config",
    "names",
    "parse_value",
    "plan_sweep",
    "read_about",
    "register",
    "run_experiment",
    "run_sweep",
]
