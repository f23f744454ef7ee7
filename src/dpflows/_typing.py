"""jaxtyping aliases shared across dpflows.

Dimension names: ``n`` particles, ``m`` a second cloud, ``d`` ambient dimension, ``k`` batch of
problems or projections, ``*event`` the shape of one particle (``(d,)`` for vectors, ``(p, q)`` for
matrices).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

Real: TypeAlias = float | int  # a Python number: int is accepted where a float is meant
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
