"""Potentials V (targets π ∝ exp(−V)) with closed forms, as ``eqx.Module``s.

A potential is a callable on one point, ``V(x) -> scalar``; flows vmap it over particles. Defining
potentials as modules (not lambdas) keeps their identity stable across calls, so a new parameter
value does not recompile a run, and their array fields can be swept.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from . import _validate
from ._typing import Array, Float

__all__ = ["GaussianPotential"]


class GaussianPotential(eqx.Module):
    """V(x) = ½ (x − m)ᵀ P (x − m): the Gaussian target N(m, P⁻¹).

    Args:
        mean: m, shape ``(d,)``.
        precision: P, symmetric positive definite, shape ``(d, d)``.

    Example:
        >>> import jax.numpy as jnp
        >>> V = GaussianPotential(jnp.zeros(2), 2 * jnp.eye(2))
        >>> float(V(jnp.ones(2)))
        2.0
    """

    mean: Float[Array, " d"]
    precision: Float[Array, "d d"]

    def __init__(self, mean: Any, precision: Any):
        mean = _validate.floating_array("mean", mean)
        precision = _validate.floating_array("precision", precision).astype(mean.dtype)
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape (d,), got {mean.shape}")
        d = mean.shape[0]
        if precision.shape != (d, d):
            raise ValueError(f"precision must have shape ({d}, {d}) to match mean, got {precision.shape}")
        if _validate.is_concrete(precision):
            p = np.asarray(precision, dtype=np.float64)
            if not np.allclose(p, p.T, rtol=1e-5, atol=1e-8):
                raise ValueError("precision must be symmetric")
            if np.linalg.eigvalsh(p).min() <= 0:
                raise ValueError("precision must be positive definite")
        self.mean = mean
        self.precision = precision

    @classmethod
    def from_covariance(cls, mean: Any, covariance: Any) -> GaussianPotential:
        """N(m, Σ) given its covariance Σ (inverted once, here)."""
        cov = _validate.floating_array("covariance", covariance)
        _validate.finite("covariance", cov)
        return cls(mean, jnp.linalg.inv(cov))

    @property
    def dim(self) -> int:
        """D."""
        return self.mean.shape[0]

    @property
    def covariance(self) -> Float[Array, "d d"]:
        """Σ = P⁻¹."""
        return jnp.linalg.inv(self.precision)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """V(x)."""
        r = x - self.mean.astype(x.dtype)
        return 0.5 * r @ (self.precision.astype(x.dtype) @ r)

    def grad(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """∇V(x) = P (x − m), in closed form."""
        return self.precision.astype(x.dtype) @ (x - self.mean.astype(x.dtype))

    def value_and_grad(self, x: Float[Array, " d"]) -> tuple[Float[Array, ""], Float[Array, " d"]]:
        """(V(x), ∇V(x)) with one matrix product: g = P r, V = ½ r·g."""
        r = x - self.mean.astype(x.dtype)
        g = self.precision.astype(x.dtype) @ r
        return 0.5 * (r @ g), g
