"""The one particle state shared by every flow, and its helpers.

A cloud of ``n`` weighted particles μ = Σᵢ wᵢ δ_{xᵢ} with optional momenta ``v`` and a flow time
``t``. Weights are stored as normalised log-weights (``logsumexp(logw) == 0``) so that
multiplicative (reaction / birth–death) updates stay stable in float32.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import logsumexp

from . import _validate
from ._typing import Array, Float, PRNGKeyArray, PyTreeAny

__all__ = ["Particles", "resample", "resample_if", "reweight", "systematic_indices"]

# Tolerance on |Σ wᵢ − 1| for user-supplied weights: it catches weights that were never
# normalised (errors of order 1) while accepting float32 round-off of sums over ~10⁶ terms.
_WEIGHT_SUM_TOL = 1e-4


class Particles(eqx.Module):
    """A weighted particle cloud: positions, log-weights, momenta, time and a flow-private carry.

    μ = Σᵢ wᵢ δ_{xᵢ} with wᵢ = exp(logwᵢ), Σᵢ wᵢ = 1. One cloud, no batch axis: batches and
    sweeps come from ``jax.vmap``. A flow that does not use a field passes it through unchanged;
    ``aux`` belongs to the flow that wrote it.

    Attributes:
        x: positions, shape ``(n, *event)``: vectors ``(n, d)`` or matrices ``(n, p, q)``.
        logw: normalised log-weights, shape ``(n,)``; uniform is ``−log n``.
        v: momenta, same shape as ``x``; zeros for first-order flows.
        t: flow time, shape ``()``.
        aux: flow-private carry (warm-start potentials, optimiser state); ``None`` by default.

    Example:
        >>> import jax.numpy as jnp
        >>> p = Particles.uniform(jnp.zeros((4, 2)))
        >>> float(p.ess())
        4.0
    """

    x: Float[Array, n * event]
    logw: Float[Array, " n"]
    v: Float[Array, n * event]
    t: Float[Array, ""]
    aux: PyTreeAny = None

    def __check_init__(self):
        # Static shape checks only: these run (cheaply) at trace time too.
        x, logw, v, t = self.x, self.logw, self.v, self.t
        if not all(hasattr(a, "shape") for a in (x, logw, v, t)):
            return
        if x.ndim < 1:
            raise ValueError(f"x must have shape (n, *event), got shape {x.shape}")
        if logw.shape != x.shape[:1]:
            raise ValueError(f"logw must have shape (n,) = {x.shape[:1]} to match x, got {logw.shape}")
        if v.shape != x.shape:
            raise ValueError(f"v must have the shape of x {x.shape}, got {v.shape}")
        if t.shape != ():
            raise ValueError(f"t must be a scalar, got shape {t.shape}")

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def create(
        cls,
        x: Any,
        logw: Any = None,
        *,
        v: Any = None,
        t: Any = 0.0,
        aux: PyTreeAny = None,
        normalise: bool = False,
    ) -> Particles:
        """Build a validated cloud.

        Args:
            x: positions ``(n, *event)`` with ``n ≥ 1``; must be finite.
            logw: log-weights ``(n,)``; uniform if ``None``. They must satisfy
                ``|Σ exp(logw) − 1| ≤ 1e-4`` unless ``normalise=True``, which normalises them.
            v: momenta (zeros if ``None``).
            t: initial time.
            aux: flow-private carry.
            normalise: normalise ``logw`` instead of refusing unnormalised weights.

        Raises:
            ValueError: empty cloud, wrong shapes, NaN/inf, or weights that do not sum to one.
        """
        x = _validate.floating_array("x", x, min_ndim=1)
        if x.shape[0] == 0:
            raise ValueError(f"x must hold at least one particle, got shape {x.shape}")
        x = _validate.finite("x", x)
        n = x.shape[0]
        if logw is None:
            logw = jnp.full((n,), -np.log(n), dtype=x.dtype)
        else:
            logw = _validate.floating_array("logw", logw).astype(x.dtype)
            if logw.shape != (n,):
                raise ValueError(f"logw must have shape (n,) = ({n},) to match x, got {logw.shape}")
            if _validate.is_concrete(logw):
                lw = np.asarray(logw, dtype=np.float64)  # NumPy: stays concrete even inside jit
                if np.any(np.isnan(lw) | (lw == np.inf)):
                    raise ValueError("logw must not contain NaN or +inf (use -inf for zero weight)")
                finite_lw = lw[np.isfinite(lw)]
                log_total = float(np.logaddexp.reduce(finite_lw)) if finite_lw.size else -np.inf
                total = float(np.exp(min(log_total, 700.0)))  # capped: exp(710) overflows float64
                if normalise:
                    if not total > 0:
                        raise ValueError("logw must give some particle a positive weight")
                elif abs(total - 1.0) > _WEIGHT_SUM_TOL:
                    raise ValueError(
                        f"logw must be normalised (Σ exp(logw) = 1), got Σ = {total:.6g}; "
                        "pass normalise=True to normalise them"
                    )
            logw = logw - logsumexp(logw) if normalise else logw
        if v is None:
            v = jnp.zeros_like(x)
        else:
            v = _validate.floating_array("v", v).astype(x.dtype)
            if v.shape != x.shape:
                raise ValueError(f"v must have the shape of x {x.shape}, got {v.shape}")
            v = _validate.finite("v", v)
        t = jnp.asarray(t, dtype=x.dtype)
        return cls(x=x, logw=logw, v=v, t=t, aux=aux)

    @classmethod
    def uniform(cls, x: Any, *, v: Any = None, t: Any = 0.0, aux: PyTreeAny = None) -> Particles:
        """Cloud with equal weights 1/n (see :meth:`create` for the checks)."""
        return cls.create(x, None, v=v, t=t, aux=aux)

    @classmethod
    def from_weights(cls, x: Any, weights: Any, **kwargs: Any) -> Particles:
        """Cloud from non-negative weights summing to one (zero weights allowed)."""
        w = _validate.floating_array("weights", weights)
        if _validate.is_concrete(w) and np.any(~np.isfinite(np.asarray(w)) | (np.asarray(w) < 0)):
            raise ValueError("weights must be finite and >= 0")
        with np.errstate(divide="ignore"):
            logw = jnp.log(w)
        return cls.create(x, logw, **kwargs)

    # --------------------------------------------------------------------------------- helpers
    @property
    def num_particles(self) -> int:
        """n, the number of particles."""
        return self.x.shape[0]

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one particle (``(d,)`` or ``(p, q)``)."""
        return tuple(self.x.shape[1:])

    @property
    def weights(self) -> Float[Array, " n"]:
        """wᵢ = exp(logwᵢ)."""
        return jnp.exp(self.logw)

    def ess(self) -> Float[Array, ""]:
        """Effective sample size (Σ wᵢ)² / Σ wᵢ², in [1, n]; computed in log space."""
        return jnp.exp(2 * logsumexp(self.logw) - logsumexp(2 * self.logw))

    def normalised(self) -> Particles:
        """Same cloud with ``logw`` shifted so that Σ wᵢ = 1."""
        return eqx.tree_at(lambda p: p.logw, self, self.logw - logsumexp(self.logw))

    def mean(self) -> Float[Array, " *event"]:
        """Weighted mean Σ wᵢ xᵢ."""
        return jnp.tensordot(self.weights, self.x, axes=1)

    def covariance(self) -> Float[Array, "d d"]:
        """Weighted covariance Σ wᵢ (xᵢ − x̄)(xᵢ − x̄)ᵀ of vector particles (``x`` of shape (n, d))."""
        if self.x.ndim != 2:
            raise ValueError(f"covariance needs vector particles (n, d), got x of shape {self.x.shape}")
        xc = self.x - self.mean()[None, :]
        return (xc * self.weights[:, None]).T @ xc


def systematic_indices(key: PRNGKeyArray, weights: Float[Array, " n"], num: int | None = None) -> Array:
    """Ancestor indices of systematic resampling.

    With one uniform u ~ U[0, 1), the j-th ancestor is the smallest i with
    Σ_{l ≤ i} w_l > (u + j)/m, j = 0, …, m − 1. Each particle is copied ⌊m wᵢ⌋ or ⌈m wᵢ⌉ times,
    so E[#copies of i] = m wᵢ (unbiased) with the lowest variance of the standard schemes.

    References:
        Kitagawa (1996); Douc, Cappé & Moulines (2005), "Comparison of resampling schemes".
    """
    n = weights.shape[0]
    m = n if num is None else num
    cdf = jnp.cumsum(weights / jnp.sum(weights))
    u = jr.uniform(key, (), dtype=weights.dtype)
    positions = (u + jnp.arange(m, dtype=weights.dtype)) / m
    idx = jnp.searchsorted(cdf, positions, side="right")
    # Round-off can leave cdf[-1] slightly below the last position: clamp to a valid index.
    return jnp.minimum(idx, n - 1)


def resample(key: PRNGKeyArray, particles: Particles) -> Particles:
    """Systematic resampling: ancestors drawn ∝ w, positions and momenta copied, weights uniform.

    Unbiased: for any f, E[(1/n) Σⱼ f(x_{Aⱼ})] = Σᵢ wᵢ f(xᵢ). Time and ``aux`` pass through.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> p = Particles.create(jnp.arange(4.0)[:, None], jnp.log(jnp.array([0., 0., 0., 1.])))
        >>> resample(jr.key(1), p).x[:, 0].tolist()
        [3.0, 3.0, 3.0, 3.0]
    """
    idx = systematic_indices(key, particles.weights)
    n = particles.num_particles
    logw = jnp.full((n,), -jnp.log(jnp.asarray(n, particles.logw.dtype)), particles.logw.dtype)
    return Particles(x=particles.x[idx], logw=logw, v=particles.v[idx], t=particles.t, aux=particles.aux)


def _check_scalar_leaf(name: str, value: Any) -> None:
    """A finite real scalar (a Python number or a 0-d array; tracers pass through unchecked)."""
    if value is None or isinstance(value, bool | str):
        raise TypeError(f"{name} must be a real scalar, got {value!r}")
    if not _validate.is_concrete(value):
        return
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be a real scalar, got {value!r}")
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    if not np.isfinite(arr) or abs(float(arr)) > float(np.finfo(np.float32).max):
        raise ValueError(f"{name} must be finite (and representable in float32), got {arr.item()!r}")


def reweight(particles: Particles, potential: Float[Array, " n"], rate: Any) -> Particles:
    """Centred multiplicative reweighting: log wᵢ ← log wᵢ − rate·(ψᵢ − ⟨w, ψ⟩), renormalised.

    The explicit Euler step of the reaction (birth–death / Fisher–Rao) flow ∂_t w = −w(ψ − ⟨w, ψ⟩)
    in log-weights. Centring does not change the normalised result but keeps ``rate·ψ`` small in
    float32. Particles of weight 0 (padding) are left out of the mean. Differentiable in ``potential``,
    ``rate`` and the weights.

    Example:
        >>> import jax.numpy as jnp
        >>> p = Particles.uniform(jnp.zeros((2, 1)))
        >>> reweight(p, jnp.array([0.0, jnp.log(3.0)]), 1.0).weights.tolist()
        [0.75, 0.25]
    """
    psi = _validate.floating_array("potential", potential)
    if psi.shape != particles.logw.shape:
        raise ValueError(f"potential must have shape {particles.logw.shape} (one value per particle), got {psi.shape}")
    psi = _validate.finite("potential", psi).astype(particles.logw.dtype)
    _check_scalar_leaf("rate", rate)
    a = particles.weights
    centred = psi - jnp.sum(jnp.where(a > 0, a * psi, 0.0))
    logw = particles.logw - jnp.asarray(rate, particles.logw.dtype) * centred
    # Shift by the max first: with |rate·ψ| ≫ 1 the small terms (log n, log 2) vanish next to the large
    # ones in float32, and subtracting logsumexp directly would leave weights that sum to 2 or more.
    logw = logw - jnp.max(logw)
    logw = logw - logsumexp(logw)
    return Particles(x=particles.x, logw=logw, v=particles.v, t=particles.t, aux=particles.aux)


def resample_if(key: PRNGKeyArray, particles: Particles, threshold: Any) -> tuple[Particles, Array]:
    """Systematic resampling when ESS < ``threshold``·n, else the particles unchanged.

    Jit/vmap-safe (a ``where``, not a Python branch): returns ``(particles, resampled)`` with
    ``resampled`` a boolean scalar. ``threshold`` is an array leaf (0 never resamples, 1 resamples
    unless the weights are uniform).
    """
    _check_scalar_leaf("threshold", threshold)
    _validate.in_closed_interval("threshold", threshold, 0.0, 1.0)
    n = particles.num_particles
    ess = particles.ess()
    do = ess < jnp.asarray(threshold, ess.dtype) * n
    idx = jnp.where(do, systematic_indices(key, particles.weights).astype(jnp.int32), jnp.arange(n, dtype=jnp.int32))
    uniform = jnp.full((n,), -jnp.log(jnp.asarray(n, particles.logw.dtype)), particles.logw.dtype)
    new = Particles(
        x=particles.x[idx],
        logw=jnp.where(do, uniform, particles.logw),
        v=particles.v[idx],
        t=particles.t,
        aux=particles.aux,
    )
    return new, do
