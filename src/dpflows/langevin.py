"""Unadjusted Langevin dynamics, and the exact laws it is tested against on Gaussian targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from . import _validate
from ._typing import Array, Float, Info, Int, PRNGKeyArray
from .flow import AbstractFlow
from .particles import Particles

__all__ = [
    "ULA",
    "batched_value_and_grad",
    "check_potential",
    "ornstein_uhlenbeck_law",
    "ula_gaussian_law",
    "ula_move",
]


def _check_point_function(name: str, fn: Callable[[Array], Array], x: Array, out_shape: tuple[int, ...]) -> None:
    """Trace ``fn`` abstractly on one particle and raise a ``ValueError`` naming the shapes if it fails."""
    point = jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    try:
        out = jax.eval_shape(fn, point)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} cannot be evaluated on one particle: the particles x have shape {tuple(x.shape)}, so one "
            f"point has shape {tuple(x.shape[1:])}; does the {name}'s dimension match the particles'? ({err})"
        ) from err
    shape = getattr(out, "shape", None)
    if shape != out_shape:
        raise ValueError(
            f"{name} must return shape {out_shape} for one particle of shape {tuple(x.shape[1:])}, got {shape}"
        )


def check_potential(
    potential: Callable[[Array], Array], x: Array, grad_potential: Callable[[Array], Array] | None = None
) -> None:
    """Raise a ``ValueError`` naming the shapes unless V (and ∇V) accept one particle of ``x``.

    V must map one point of shape ``x.shape[1:]`` to a scalar, and ``grad_potential`` to the point's
    shape. The check traces abstractly (``jax.eval_shape``): no FLOPs, and it works under ``jit``.

    Example:
        >>> import jax.numpy as jnp
        >>> check_potential(lambda p: jnp.sum(p * jnp.ones(3)), jnp.zeros((5, 2)))
        Traceback (most recent call last):
        ...
        ValueError: potential cannot be evaluated on one particle: the particles x have shape (5, 2), ...
    """
    _check_point_function("potential", potential, x, ())
    if grad_potential is not None:
        _check_point_function("grad_potential", grad_potential, x, tuple(x.shape[1:]))


def batched_value_and_grad(
    potential: Callable[[Array], Array], grad_potential: Callable[[Array], Array] | None, x: Array
) -> tuple[Array, Array]:
    """Values and gradients (V(xᵢ), ∇V(xᵢ)) at every particle.

    Uses ``grad_potential`` if given, a closed-form ``potential.value_and_grad`` if the potential has
    one, else autodiff. The potential (and ``grad_potential``) is first traced abstractly on one
    particle (``jax.eval_shape``, free at run time), so a dimension mismatch between the particles
    and the potential is a ``ValueError`` naming both shapes instead of a broadcasting error.

    Raises:
        ValueError: the potential cannot be evaluated on one particle of ``x``, does not return a
            scalar, or ``grad_potential`` does not return the particle's shape.
    """
    check_potential(potential, x, grad_potential)
    if grad_potential is not None:
        return jax.vmap(potential)(x), jax.vmap(grad_potential)(x)
    if hasattr(potential, "value_and_grad"):  # closed form, shares work (e.g. Gaussian)
        return jax.vmap(potential.value_and_grad)(x)
    return jax.vmap(jax.value_and_grad(potential))(x)


def ula_move(
    x: Float[Array, "n ..."],
    grad: Float[Array, "n ..."],
    step_size: Any,
    key: PRNGKeyArray,
    *,
    temperature: Any = 1.0,
) -> Float[Array, "n ..."]:
    """One Euler–Maruyama move of overdamped Langevin dX = −∇V(X) dt + √(2T) dW, for every particle.

        x ← x − h ∇V(x) + √(2hT) ξ,   ξ ~ N(0, I) drawn from ``key``.

    The transport step shared by :class:`ULA` (h = ``step_size``) and the SHK sampler (h = αh, the
    transport weight times the step). Differentiable in ``x``, ``grad``, ``step_size`` and
    ``temperature`` (reparameterised noise).

    Args:
        x: positions ``(n, *event)``.
        grad: ∇V at ``x``, same shape.
        step_size: h ≥ 0 (h = 0 leaves ``x`` unchanged).
        key: PRNG key of the noise.
        temperature: T ≥ 0 (1 samples π ∝ e^{−V}; 0 is gradient descent).

    Returns:
        The moved positions, ``x``'s shape and dtype.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> x = jnp.ones((4, 2))
        >>> bool(jnp.all(ula_move(x, x, 0.5, jr.key(0), temperature=0.0) == 0.5))
        True
    """
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {tuple(x.shape)}, got {tuple(grad.shape)}")
    h = jnp.asarray(step_size, x.dtype)
    noise = jr.normal(key, x.shape, dtype=x.dtype)
    scale = jnp.sqrt(2 * h * jnp.asarray(temperature, x.dtype))  # × 1.0 is exact: ULA's √(2h) bit for bit
    return x - h * grad + scale * noise


class ULA(AbstractFlow):
    """Unadjusted Langevin algorithm for π ∝ exp(−V).

    Euler–Maruyama discretisation of dX = −∇V(X) dt + √2 dW with step h = ``step_size``:

        x ← x − h ∇V(x) + √(2h) ξ,   ξ ~ N(0, I),   t ← t + h.

    Its stationary law is biased by O(h) (for a Gaussian target with precision P the stationary
    covariance is P⁻¹(I − hP/2)⁻¹). Weights, momenta and ``aux`` pass through unchanged.
    ``info``: ``energy`` = Σ wᵢ V(xᵢ) at the state the step starts from (computed with the
    gradient), unless ``record_energy=False``. Differentiable in ``x`` and ``step_size`` (reparameterised noise).

    Args:
        potential: V: ℝᵈ → ℝ for one point; vmapped over particles. Prefer an ``eqx.Module`` or a
            module-level function (a fresh lambda per call recompiles).
        step_size: h > 0.
        record_energy: report ``energy`` in ``info`` (default). Its reduction costs ~1.4× the step
            at small d on XLA:CPU (it stops r and ∇V from fusing away; `benchmarks/bench_runtime.py`);
            ``False`` gives an empty ``info`` and the bare step.
        grad_potential: optional ∇V for one point (default: ``jax.value_and_grad(potential)``).
            A potential with a ``value_and_grad`` method (e.g.
            :class:`~dpflows.potentials.GaussianPotential`) uses its closed form.

    References:
        Roberts & Tweedie (1996), Bernoulli 2(4): 341–363.
    """

    potential: Callable[[Array], Array]
    step_size: Float[Array, ...] = eqx.field(converter=jnp.asarray)
    grad_potential: Callable[[Array], Array] | None = None
    record_energy: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not callable(self.potential):
            raise TypeError(f"potential must be callable, got {type(self.potential).__name__}")
        _validate.positive("step_size", self.step_size)

    def init(self, x: Any, logw: Any = None) -> Particles:
        """Particles at ``x`` (weights uniform unless given), zero momenta, t = 0."""
        return Particles.create(x, logw)

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One Euler–Maruyama step."""
        x = state.x
        h = self.step_size.astype(x.dtype)
        value, grad = batched_value_and_grad(self.potential, self.grad_potential, x)
        x_new = ula_move(x, grad, h, key)
        new = Particles(x=x_new, logw=state.logw, v=state.v, t=state.t + h.astype(state.t.dtype), aux=state.aux)
        if not self.record_energy:
            return new, {}
        return new, {"energy": jnp.sum(state.weights * value)}


def _sym_fn(precision: Array, fn: Callable[[Array], Array]) -> Array:
    """f(P) for symmetric P through its eigendecomposition."""
    lam, q = jnp.linalg.eigh(precision)
    return (q * fn(lam)[None, :]) @ q.T


def ornstein_uhlenbeck_law(
    mean0: Float[Array, " d"],
    cov0: Float[Array, "d d"],
    target_mean: Float[Array, " d"],
    precision: Float[Array, "d d"],
    time: Any,
) -> tuple[Array, Array]:
    """Exact law at time t of dX = −P(X − m) dt + √2 dW started from N(m₀, Σ₀).

    mean_t = m + e^{−Pt}(m₀ − m),
    Σ_t   = e^{−Pt} Σ₀ e^{−Pt} + P⁻¹(I − e^{−2Pt}).
    """
    e = _sym_fn(precision, lambda lam: jnp.exp(-lam * time))
    stat = _sym_fn(precision, lambda lam: -jnp.expm1(-2 * lam * time) / lam)
    mean = target_mean + e @ (mean0 - target_mean)
    return mean, e @ cov0 @ e + stat


def _int_power(base: Array, k: Array) -> Array:
    """baseᵏ for an integer (possibly traced) k ≥ 0, exact in sign for negative bases."""
    kf = k.astype(base.dtype)
    magnitude = jnp.abs(base) ** kf
    odd = (k % 2) == 1
    return jnp.where((base < 0) & odd, -magnitude, magnitude)


def ula_gaussian_law(
    mean0: Float[Array, " d"],
    cov0: Float[Array, "d d"],
    target_mean: Float[Array, " d"],
    precision: Float[Array, "d d"],
    step_size: Any,
    num_steps: int | Int[Array, ""],
) -> tuple[Array, Array]:
    """Exact law of the ULA iterate after k steps on a Gaussian target (no discretisation error).

    With B = I − hP: mean_k = m + Bᵏ(m₀ − m) and Σ_k = Bᵏ Σ₀ Bᵏ + 2h (I − B²)⁻¹ (I − B²ᵏ).
    Requires hλ_max(P) < 2 (otherwise ULA diverges).
    """
    h = jnp.asarray(step_size, precision.dtype)
    k = jnp.asarray(num_steps)
    bk = _sym_fn(precision, lambda lam: _int_power(1 - h * lam, k))
    # 2h (1 − b^{2k}) / (1 − b²) with b = 1 − hλ, written as 2(1 − b^{2k}) / (λ(2 − hλ)).
    stat = _sym_fn(precision, lambda lam: 2 * (1 - _int_power(1 - h * lam, 2 * k)) / (lam * (2 - h * lam)))
    mean = target_mean + bk @ (mean0 - target_mean)
    return mean, bk @ cov0 @ bk + stat
