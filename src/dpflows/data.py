"""Datasets for the experiments: synthetic 2-D laws (generated) and scikit-learn's bundled digits.

Nothing here downloads anything: the synthetic sets are drawn from an explicit key, and the digits
are the 1797 8×8 images that ship inside scikit-learn (an ``experiments`` extra).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from . import _validate
from ._typing import Array, Float, Int, PRNGKeyArray

__all__ = [
    "digits",
    "eight_gaussians",
    "eight_gaussians_centers",
    "swiss_roll",
    "swiss_roll_curve",
    "twenty_five_gaussians",
    "twenty_five_gaussians_centers",
    "two_moons",
]


def _scalars(**params) -> None:
    """Each parameter must be a finite real scalar ≥ 0 (``noise``) or > 0 (the rest), named if not."""
    largest = float(jnp.finfo(jnp.result_type(float)).max)
    for name, value in params.items():
        if _validate.is_concrete(value):  # traced values (a sweep under jit) pass unchecked
            value = _validate.scalar(name, value)
        _validate.positive(name, value, allow_zero=name == "noise")
        if _validate.is_concrete(value) and value > largest:
            raise ValueError(f"{name} must be <= {largest:.4g} (the largest {jnp.result_type(float)}), got {value!r}")


def _checked(points, **params):
    """Refuse a sample that overflowed the float dtype (parameters too large), naming the parameters."""
    if _validate.is_concrete(points) and not bool(np.all(np.isfinite(np.asarray(points)))):
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ValueError(f"{shown} overflow {points.dtype}: the sample is not finite; use smaller values")
    return points


def eight_gaussians_centers(radius: float = 0.75) -> Float[Array, "8 2"]:
    """The 8 modes of :func:`eight_gaussians`: evenly spaced on the circle of the given radius."""
    _scalars(radius=radius)
    angles = 2.0 * math.pi * np.arange(8) / 8
    return jnp.asarray(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), jnp.result_type(float))


def eight_gaussians(
    key: PRNGKeyArray, n: int, *, radius: float = 0.75, std: float = 0.06
) -> tuple[Float[Array, "n 2"], Int[Array, " n"]]:
    """Draw n points from the equal mixture of 8 isotropic Gaussians N(c_k, std² I) on a circle.

    Returns:
        (points, mode labels). With the defaults the law sits well inside the unit disk
        (P(‖x‖ > 1) ≈ 1e-5), the domain the LDP randomisers clip to.
    """
    key = _validate.prng_key("key", key)
    n = _validate.positive_int("n", n)
    _scalars(radius=radius, std=std)
    k_mode, k_noise = jr.split(key)
    labels = jr.randint(k_mode, (n,), 0, 8)
    centers = _checked(eight_gaussians_centers(radius), radius=radius)
    x = centers[labels] + std * jr.normal(k_noise, (n, 2), dtype=centers.dtype)
    return _checked(x, radius=radius, std=std), labels


def two_moons(
    key: PRNGKeyArray, n: int, *, noise: float = 0.05, scale: float = 0.45
) -> tuple[Float[Array, "n 2"], Int[Array, " n"]]:
    """Draw n points from the two-moons law, centred and scaled by ``scale`` (inside the unit disk).

    The upper moon is the unit half-circle, the lower one its mirror shifted by (1, 0.5); both are
    then shifted by (−0.5, −0.25) and multiplied by ``scale``; ``noise`` is the Gaussian jitter
    (before scaling). Returns (points, moon labels).
    """
    key = _validate.prng_key("key", key)
    n = _validate.positive_int("n", n)
    _scalars(noise=noise, scale=scale)
    k_lab, k_t, k_noise = jr.split(key, 3)
    labels = jr.randint(k_lab, (n,), 0, 2)
    dtype = jnp.result_type(float)
    t = math.pi * jr.uniform(k_t, (n,), dtype=dtype)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    x = jnp.where((labels == 0)[:, None], upper, lower)
    x = x + noise * jr.normal(k_noise, (n, 2), dtype=dtype) - jnp.asarray([0.5, 0.25], dtype)
    return _checked(scale * x, noise=noise, scale=scale), labels


def twenty_five_gaussians_centers(spacing: float = 0.4) -> Float[Array, "25 2"]:
    """The 25 modes of :func:`twenty_five_gaussians`: the 5 × 5 grid {−2, …, 2}² × ``spacing``."""
    _scalars(spacing=spacing)
    g = spacing * np.arange(-2, 3, dtype=np.float64)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    return jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1), jnp.result_type(float))


def twenty_five_gaussians(
    key: PRNGKeyArray, n: int, *, spacing: float = 0.4, std: float = 0.03
) -> tuple[Float[Array, "n 2"], Int[Array, " n"]]:
    """Draw n points from the equal mixture of 25 Gaussians N(c_k, std² I) on a 5 × 5 grid. Returns (points, labels)."""
    key = _validate.prng_key("key", key)
    n = _validate.positive_int("n", n)
    _scalars(spacing=spacing, std=std)
    k_mode, k_noise = jr.split(key)
    labels = jr.randint(k_mode, (n,), 0, 25)
    centers = _checked(twenty_five_gaussians_centers(spacing), spacing=spacing)
    x = centers[labels] + std * jr.normal(k_noise, (n, 2), dtype=centers.dtype)
    return _checked(x, spacing=spacing, std=std), labels


def swiss_roll_curve(t: Float[Array, " n"], *, scale: float = 0.08) -> Float[Array, "n 2"]:
    """The noiseless 2-D Swiss roll at parameters t ∈ [1.5π, 4.5π]: scale · t · (cos t, sin t)."""
    t = _validate.floating_array("t", t)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (n,), got {t.shape}")
    if _validate.is_concrete(t):
        _validate.finite("t", t)
    _scalars(scale=scale)
    return _checked(scale * jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1), scale=scale)


def swiss_roll(
    key: PRNGKeyArray, n: int, *, noise: float = 0.02, scale: float = 0.08
) -> tuple[Float[Array, "n 2"], Float[Array, " n"]]:
    """Draw n points of the 2-D Swiss roll: t ~ U[1.5π, 4.5π], x = curve(t) + noise·N(0, I) (inside ‖x‖ ≤ 1.2).

    Returns (points, roll parameters t): t orders the points along the roll (its "modes" are arcs).
    """
    key = _validate.prng_key("key", key)
    n = _validate.positive_int("n", n)
    _scalars(noise=noise, scale=scale)
    k_t, k_noise = jr.split(key)
    dtype = jnp.result_type(float)
    t = jr.uniform(k_t, (n,), dtype=dtype, minval=1.5 * math.pi, maxval=4.5 * math.pi)
    x = swiss_roll_curve(t, scale=scale) + noise * jr.normal(k_noise, (n, 2), dtype=dtype)
    return _checked(x, noise=noise, scale=scale), t


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits: images (1797, 64) in [0, 1] and labels (1797,).

    Raises:
        ImportError: scikit-learn is not installed (``pip install dpflows[experiments]``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("digits() needs scikit-learn: pip install 'dpflows[experiments]'") from err
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int32)
