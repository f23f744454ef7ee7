"""Distances between laws used to score flows.

Only closed forms live here for now; sample-based distances (energy distance, MMD, sliced W) are
added with the flows that need them.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._typing import Array, Float

__all__ = ["gaussian_kl", "gaussian_fit"]


def gaussian_kl(
    mean0: Float[Array, " d"],
    cov0: Float[Array, "d d"],
    mean1: Float[Array, " d"],
    cov1: Float[Array, "d d"],
) -> Float[Array, ""]:
    """KL(N(m₀, Σ₀) ‖ N(m₁, Σ₁)) = ½[tr(Σ₁⁻¹Σ₀) + (m₁−m₀)ᵀΣ₁⁻¹(m₁−m₀) − d + log det Σ₁ − log det Σ₀].

    Computed with Cholesky factors (stable for well-conditioned covariances).
    """
    d = mean0.shape[-1]
    l1 = jnp.linalg.cholesky(cov1)
    l0 = jnp.linalg.cholesky(cov0)
    a = jax_solve_triangular(l1, l0)
    diff = jax_solve_triangular(l1, (mean1 - mean0)[:, None])[:, 0]
    logdet1 = 2 * jnp.sum(jnp.log(jnp.diagonal(l1)))
    logdet0 = 2 * jnp.sum(jnp.log(jnp.diagonal(l0)))
    return 0.5 * (jnp.sum(a * a) + diff @ diff - d + logdet1 - logdet0)


def jax_solve_triangular(lower: Array, b: Array) -> Array:
    """Solve L X = B for lower-triangular L."""
    from jax.scipy.linalg import solve_triangular

    return solve_triangular(lower, b, lower=True)


def gaussian_fit(x: Float[Array, "n d"], w: Float[Array, " n"] | None = None) -> tuple[Array, Array]:
    """Weighted mean and covariance of a sample (the moment-matched Gaussian)."""
    n = x.shape[0]
    w = jnp.full((n,), 1.0 / n, x.dtype) if w is None else w
    mean = w @ x
    xc = x - mean[None, :]
    return mean, (xc * w[:, None]).T @ xc
