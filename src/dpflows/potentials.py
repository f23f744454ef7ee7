"""Potentials V (targets π ∝ exp(−V)) with closed forms, as ``eqx.Module``s.

A potential is a callable on one point, ``V(x) -> scalar``; flows vmap it over particles. Defining
potentials as modules (not lambdas) keeps their identity stable across calls, so a new parameter
value does not recompile a run, and their array fields can be swept.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from ._typing import Array, Float

__all__ = ["GaussianMixturePotential", "GaussianPotential"]


class GaussianPotential(eqx.Module):
    """V(x) = ½ (x − m)ᵀ P (x − m): the Gaussian target N(m, P⁻¹).

    Args:
        mean: m, shape ``(d,)``, finite.
        precision: P, symmetric positive definite, shape ``(d, d)``, finite (in ``mean``'s dtype).

    Raises:
        ValueError: a shape mismatch, NaN/inf entries, or P not symmetric positive definite
            (concrete values; traced values are not checked).

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
        if mean.ndim != 1 or mean.shape[0] == 0:
            raise ValueError(f"mean must have shape (d,) with d >= 1, got {mean.shape}")
        d = mean.shape[0]
        if precision.shape != (d, d):
            raise ValueError(f"precision must have shape ({d}, {d}) to match mean, got {precision.shape}")
        if _validate.is_concrete(mean):
            _validate.finite("mean", mean)
        if _validate.is_concrete(precision):
            _validate.finite("precision", precision)
            p = np.asarray(precision, dtype=np.float64)
            if not np.allclose(p, p.T, rtol=1e-5, atol=1e-8):
                raise ValueError("precision must be symmetric")
            if np.linalg.eigvalsh(p).min() <= 0:
                raise ValueError("precision must be positive definite")
        self.mean = mean
        self.precision = precision

    @classmethod
    def from_covariance(cls, mean: Any, covariance: Any) -> GaussianPotential:
        """N(m, Σ) given its covariance Σ (inverted once, here); Σ must be symmetric positive definite."""
        cov = _validate.floating_array("covariance", covariance)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"covariance must be a square matrix (d, d), got shape {cov.shape}")
        cov = _validate.finite("covariance", cov)
        if _validate.is_concrete(cov):
            c = np.asarray(cov, dtype=np.float64)
            if c.size and (not np.allclose(c, c.T, rtol=1e-5, atol=1e-8) or np.linalg.eigvalsh(c).min() <= 0):
                raise ValueError("covariance must be symmetric positive definite")
        precision = jnp.linalg.inv(cov)
        if _validate.is_concrete(precision) and not np.all(np.isfinite(np.asarray(precision))):
            raise ValueError("covariance is too ill-conditioned to invert in its dtype (its inverse is not finite)")
        return cls(mean, precision)

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


class GaussianMixturePotential(eqx.Module):
    """V(x) = −log Σₖ wₖ N(x; μₖ, σₖ² I): an isotropic Gaussian mixture target.

    Args:
        means: μ, shape ``(k, d)``.
        weights: w, shape ``(k,)``, non-negative, summing to one.
        scales: σ > 0, shape ``(k,)`` or a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> V = GaussianMixturePotential(jnp.array([[-1.0], [1.0]]), jnp.array([0.5, 0.5]), 1.0)
        >>> round(float(V(jnp.zeros(1))), 4)  # −log N(0; ±1, 1)
        1.4189
    """

    means: Float[Array, "k d"]
    log_weights: Float[Array, " k"]
    scales: Float[Array, " k"]

    def __init__(self, means: Any, weights: Any, scales: Any):
        means = _validate.floating_array("means", means)
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (k, d) with k, d >= 1, got {means.shape}")
        if _validate.is_concrete(means):
            _validate.finite("means", means)
        k = means.shape[0]
        weights = _validate.floating_array("weights", weights).astype(means.dtype)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},) to match means, got {weights.shape}")
        _validate.representable("scales", scales, means.dtype)  # before any cast: 1e300 → inf in float32
        scales = _validate.floating_array("scales", scales).astype(means.dtype)
        if scales.shape not in ((), (k,)):
            raise ValueError(f"scales must be a scalar or have shape ({k},) to match means, got {scales.shape}")
        scales = jnp.broadcast_to(scales, (k,))
        _validate.positive("scales", scales)
        if _validate.is_concrete(weights):
            w = np.asarray(weights, np.float64)
            if np.any(~np.isfinite(w)):
                raise ValueError(f"weights must be finite, got {_validate.show(w)}")
            if np.any(w < 0) or abs(w.sum() - 1) > 1e-5:
                raise ValueError(f"weights must be >= 0 and sum to one, got sum {w.sum():.6g}")
        self.means = means
        with np.errstate(divide="ignore"):
            self.log_weights = jnp.log(weights)
        self.scales = scales

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """V(x)."""
        d = x.shape[0]
        s = self.scales.astype(x.dtype)
        sq = jnp.sum((x[None, :] - self.means.astype(x.dtype)) ** 2, axis=1)
        logits = self.log_weights.astype(x.dtype) - 0.5 * sq / s**2 - d * jnp.log(s) - 0.5 * d * jnp.log(2 * jnp.pi)
        return -jax.scipy.special.logsumexp(logits)

    def component(self, x: Float[Array, "n d"]) -> Array:
        """Index of the component each point most likely came from (posterior argmax)."""
        s = self.scales.astype(x.dtype)
        sq = jnp.sum((x[:, None, :] - self.means.astype(x.dtype)[None, :, :]) ** 2, axis=2)
        return jnp.argmax(
            self.log_weights.astype(x.dtype)[None, :] - 0.5 * sq / s[None, :] ** 2 - x.shape[1] * jnp.log(s)[None, :],
            axis=1,
        )
