"""Distances between laws used to score flows: closed forms and sample-based scores.

Sample-based scores take two clouds and return plain floats or arrays; they are for evaluation
(experiments, notebooks), not for differentiation.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from . import _validate
from ._typing import Array, Float

__all__ = [
    "energy_distance",
    "frechet_distance",
    "gaussian_fit",
    "gaussian_kl",
    "mmd",
    "mode_coverage",
    "nearest_neighbour_distances",
    "wasserstein2",
]


def gaussian_kl(
    mean0: Float[Array, " d"],
    cov0: Float[Array, "d d"],
    mean1: Float[Array, " d"],
    cov1: Float[Array, "d d"],
) -> Float[Array, ""]:
    """KL(N(m₀, Σ₀) ‖ N(m₁, Σ₁)) = ½[tr(Σ₁⁻¹Σ₀) + (m₁−m₀)ᵀΣ₁⁻¹(m₁−m₀) − d + log det Σ₁ − log det Σ₀].

    Computed with Cholesky factors (stable for well-conditioned covariances). Jittable; concrete
    arguments are checked (finite, matching shapes, symmetric positive definite covariances), traced
    ones are not (a covariance that is not positive definite then gives NaN).

    Raises:
        ValueError: a shape mismatch, NaN/inf entries or a covariance that is not positive definite
            (concrete values), naming the argument.
    """
    _gaussian_args(mean0, cov0, "mean0", "cov0")
    _gaussian_args(mean1, cov1, "mean1", "cov1")
    if mean0.shape != mean1.shape:
        raise ValueError(f"mean0 and mean1 must have one shape, got {mean0.shape} and {mean1.shape}")
    d = mean0.shape[-1]
    l1 = jnp.linalg.cholesky(cov1)
    l0 = jnp.linalg.cholesky(cov0)
    a = jax_solve_triangular(l1, l0)
    diff = jax_solve_triangular(l1, (mean1 - mean0)[:, None])[:, 0]
    logdet1 = 2 * jnp.sum(jnp.log(jnp.diagonal(l1)))
    logdet0 = 2 * jnp.sum(jnp.log(jnp.diagonal(l0)))
    kl = 0.5 * (jnp.sum(a * a) + diff @ diff - d + logdet1 - logdet0)
    if _validate.is_concrete(kl) and not np.isfinite(np.asarray(kl)):
        raise ValueError(
            f"gaussian_kl overflows {kl.dtype} for these arguments (mean0/mean1/cov0/cov1 too far apart or "
            "too ill-conditioned): rescale them or use float64"
        )
    return kl


def _gaussian_args(mean, cov, mean_name: str, cov_name: str) -> None:
    d = mean.shape[-1] if mean.ndim else 0
    if mean.ndim != 1 or d == 0:
        raise ValueError(f"{mean_name} must have shape (d,) with d >= 1, got {mean.shape}")
    if cov.shape != (d, d):
        raise ValueError(f"{cov_name} must have shape ({d}, {d}) to match {mean_name}, got {cov.shape}")
    if _validate.is_concrete(mean):
        _validate.finite(mean_name, mean)
    if _validate.is_concrete(cov):
        _validate.finite(cov_name, cov)
        c = np.asarray(cov, np.float64)
        if not np.allclose(c, c.T, rtol=1e-5, atol=1e-8) or np.linalg.eigvalsh(0.5 * (c + c.T)).min() <= 0:
            raise ValueError(f"{cov_name} must be symmetric positive definite")


def jax_solve_triangular(lower: Array, b: Array) -> Array:
    """Solve L X = B for lower-triangular L."""
    from jax.scipy.linalg import solve_triangular

    return solve_triangular(lower, b, lower=True)


def gaussian_fit(x: Float[Array, "n d"], w: Float[Array, " n"] | None = None) -> tuple[Array, Array]:
    """Weighted mean and covariance of a sample (the moment-matched Gaussian).

    ``w`` (default uniform) are normalised weights: ≥ 0, summing to one. Jittable; concrete
    arguments are checked (NaN/inf, negative weights, weights not summing to one), traced ones not.

    Raises:
        ValueError: an empty sample, a shape mismatch or bad values (concrete), naming the argument.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, d) with n >= 1, got {x.shape}")
    n = x.shape[0]
    if _validate.is_concrete(x):
        _validate.finite("x", x)
    if w is not None:
        if w.shape != (n,):
            raise ValueError(f"w must have shape ({n},) to match x, got {w.shape}")
        if _validate.is_concrete(w):
            wn = np.asarray(w, np.float64)
            if np.any(~np.isfinite(wn) | (wn < 0)) or abs(wn.sum() - 1) > 1e-4:
                raise ValueError(f"w must be finite, >= 0 and sum to one, got {_validate.show(wn)}")
    w = jnp.full((n,), 1.0 / n, x.dtype) if w is None else w
    mean = w @ x
    xc = x - mean[None, :]
    return mean, (xc * w[:, None]).T @ xc


# Squared distances of points beyond this magnitude overflow float64 (1e150² · d ≈ 1e300).
_MAX_ABS = 1e150


def _two_clouds(x, y, xname: str = "x", yname: str = "y"):
    x = _validate.real_numpy(xname, x)
    y = _validate.real_numpy(yname, y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"{xname} and {yname} must be clouds (n, d) of one dimension, got {x.shape} and {y.shape}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"{xname} and {yname} must hold at least one point each")
    for name, arr in ((xname, x), (yname, y)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} NaN/inf entries")
        if arr.size and np.abs(arr).max() > _MAX_ABS:
            raise ValueError(
                f"{name} must have entries of magnitude <= {_MAX_ABS:g} (squared distances overflow), "
                f"got max {np.abs(arr).max():.3g}"
            )
    return x, y


def _pairwise(x, y):
    sq = np.sum(x * x, 1)[:, None] + np.sum(y * y, 1)[None, :] - 2.0 * x @ y.T
    return np.maximum(sq, 0.0)


def mmd(x: Any, y: Any, *, bandwidths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)) -> float:
    """Squared MMD (unbiased U-statistic) with a sum of Gaussian kernels k(u, v) = Σ_h exp(−‖u−v‖²/(2h²)).

    MMD² = E k(X, X′) + E k(Y, Y′) − 2 E k(X, Y), diagonal terms excluded (can be slightly < 0).
    """
    x, y = _two_clouds(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("mmd needs at least two points in each cloud")
    bandwidths = tuple(bandwidths) if isinstance(bandwidths, list | tuple) else (bandwidths,)
    if not bandwidths:
        raise ValueError("bandwidths must hold at least one bandwidth, got ()")
    for h in bandwidths:
        _validate.positive("bandwidths", _validate.scalar("bandwidths", h))

    def k(sq):
        return sum(np.exp(-sq / (2.0 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(_pairwise(x, x)), k(_pairwise(y, y)), k(_pairwise(x, y))
    n, m = x.shape[0], y.shape[0]
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean()
    )


def energy_distance(x: Any, y: Any) -> float:
    """Energy distance 2E‖X−Y‖ − E‖X−X′‖ − E‖Y−Y′‖ (V-statistic, ≥ 0; Székely & Rizzo 2013)."""
    x, y = _two_clouds(x, y)
    d = lambda a, b: np.sqrt(_pairwise(a, b)).mean()  # noqa: E731
    return float(2.0 * d(x, y) - d(x, x) - d(y, y))


def wasserstein2(x: Any, y: Any) -> float:
    """Exact W₂ between two uniform clouds of equal size (optimal assignment, scipy): √(min_σ mean ‖xᵢ − y_σ(i)‖²).

    O(n³): meant for evaluation clouds of up to a few thousand points.
    """
    from scipy.optimize import linear_sum_assignment

    x, y = _two_clouds(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"wasserstein2 needs clouds of equal size, got {x.shape[0]} and {y.shape[0]}")
    cost = _pairwise(x, y)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def mode_coverage(x: Any, centers: Any, *, radius: float, min_share: float = 0.25) -> dict[str, float]:
    """How a sample covers K known modes: each point goes to its nearest centre if within ``radius``.

    Returns:
        ``coverage``: fraction of modes holding at least ``min_share`` × 1/K of the sample;
        ``off_mode``: fraction of points farther than ``radius`` from every centre (mode mixture);
        ``share_error``: total-variation distance between the per-mode shares (of on-mode points)
        and the uniform 1/K.
    """
    _validate.positive("radius", _validate.scalar("radius", radius))
    _validate.positive("min_share", _validate.scalar("min_share", min_share), allow_zero=True)
    x, c = _two_clouds(x, centers, "x", "centers")
    dist = np.sqrt(_pairwise(x, c))
    nearest = dist.argmin(1)
    on = dist.min(1) <= radius
    counts = np.bincount(nearest[on], minlength=c.shape[0])
    k = c.shape[0]
    shares = counts / max(1, on.sum())
    return {
        "coverage": float(np.mean(counts / x.shape[0] >= min_share / k)),
        "off_mode": float(1.0 - on.mean()),
        "share_error": float(0.5 * np.abs(shares - 1.0 / k).sum()),
    }


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between Gaussian fits of two clouds (the FID formula on given features).

        FD = ‖m_x − m_y‖² + tr(Σ_x + Σ_y − 2 (Σ_x^{1/2} Σ_y Σ_x^{1/2})^{1/2})

    The matrix square roots are taken by symmetric eigendecompositions in float64 (negative round-off
    eigenvalues clipped), which is exact for PSD covariances, unlike ``scipy.linalg.sqrtm`` of the
    non-symmetric product. It equals W₂² between the two Gaussians.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(20000, 2)); y = 2.0 * rng.normal(size=(20000, 2)) + 1.0
        >>> abs(frechet_distance(x, y) - 4.0) < 0.2  # ‖(1, 1)‖² + tr(I + 4I − 2·2I) = 2 + 2
        True
    """
    x, y = _two_clouds(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("frechet_distance needs at least 2 points in each cloud")
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))

    def sqrtm_psd(c):
        w, v = np.linalg.eigh(0.5 * (c + c.T))
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T

    root = sqrtm_psd(cx)
    cross = sqrtm_psd(root @ cy @ root)
    return float(np.sum((mx - my) ** 2) + np.trace(cx) + np.trace(cy) - 2.0 * np.trace(cross))


def nearest_neighbour_distances(x: Any, reference: Any, *, chunk: int = 1024) -> np.ndarray:
    """For each point of x, the Euclidean distance to its nearest point of ``reference`` (chunked, float64).

    The memorisation check of a generator: samples of a model that copies its training set sit at
    distance ~0 from it, while new samples sit about as far as held-out data does.
    """
    chunk = _validate.positive_int("chunk", chunk)
    x, r = _two_clouds(x, reference, "x", "reference")
    out = np.empty(x.shape[0])
    rr = np.sum(r * r, axis=1)
    for s in range(0, x.shape[0], chunk):
        xb = x[s : s + chunk]
        d2 = np.sum(xb * xb, axis=1)[:, None] + rr[None, :] - 2.0 * xb @ r.T
        out[s : s + chunk] = np.sqrt(np.clip(d2.min(1), 0.0, None))
    return out
