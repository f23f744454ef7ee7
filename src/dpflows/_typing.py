"""jaxtyping aliases shared across dpflows.

Dimension names: ``n`` particles, ``m`` a second cloud, ``d`` ambient dimension, ``k`` batch of
problems or projections, ``*event`` the shape of one particle (``(d,)`` for vectors, ``(p, q)`` for
matrices).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

# A number as users pass it: Python or NumPy scalars; int is accepted where a float is meant.
Real: TypeAlias = float | int | np.floating | np.integer
Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = float | int | Float[Array, ""]
Info: TypeAlias = dict[str, Array]
PyTreeAny: TypeAlias = PyTree[Any]

__all__ = [
    "Array",
    "Bool",
    "Float",
    "Info",
    "Int",
    "PRNGKeyArray",
    "PyTree",
    "PyTreeAny",
    "Real",
    "Scalar",
    "ScalarLike",
]
