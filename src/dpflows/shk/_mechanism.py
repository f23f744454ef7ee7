"""The exponential mechanism as an SHK target, and the exact pure-reaction sampler as a mechanism."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from .. import _validate
from .._typing import Array, Float, PRNGKeyArray, PyTreeAny, Real
from ..flow import run
from ..privacy import PrivacyCertificate
from ._certificates import dp_certificate
from ._sampler import SHKSampler, draw

__all__ = ["ExponentialMechanismPotential", "exponential_mechanism", "inverse_temperature", "private_sample"]


def inverse_temperature(epsilon: Any, sensitivity: Any) -> Any:
    """γ = ε / (2Δ): the exponential mechanism exp(−γ L) is then ε-DP when |L_D − L_D′| ≤ Δ.

    Works on numbers and (traced) arrays; concrete values are checked.

    Raises:
        ValueError: ``epsilon`` or ``sensitivity`` is not finite and > 0 (named).

    Example:
        >>> inverse_temperature(1.0, 2.0)
        0.25
    """
    _validate.positive("epsilon", epsilon)
    _validate.positive("sensitivity", sensitivity)
    return epsilon / (2.0 * sensitivity)


class ExponentialMechanismPotential(eqx.Module):
    """V_D(θ) = γ · L(θ; D) + V₀(θ), the exponential-mechanism target π_D ∝ ρ_prior · e^{−γL}.

    ``inverse_temperature``, ``sensitivity`` and ``epsilon`` are array leaves, so SHK samplers over
    an ε grid stack into one sweep that compiles once (the data stay one unbatched leaf).

    Attributes:
        loss: L(θ, data) → scalar, with sup_θ |L(θ; D) − L(θ; D′)| ≤ ``sensitivity`` for neighbours.
        data: the private dataset (any pytree of arrays).
        inverse_temperature: γ = ε/(2Δ).
        sensitivity: Δ.
        epsilon: ε of the exact exponential mechanism (ε_EM = 2γΔ).
        prior: optional data-independent potential V₀ (e.g. ½‖θ‖²); it does not affect privacy.
    """

    loss: Callable[[Array, Any], Array]
    data: PyTreeAny
    inverse_temperature: Float[Array, ...] = eqx.field(converter=jnp.asarray)
    sensitivity: Float[Array, ...] = eqx.field(converter=jnp.asarray)
    epsilon: Float[Array, ...] = eqx.field(converter=jnp.asarray)
    prior: Callable[[Array], Array] | None = None

    def __check_init__(self):
        _validate.positive("inverse_temperature", self.inverse_temperature)
        _validate.positive("sensitivity", self.sensitivity)
        _validate.positive("epsilon", self.epsilon)

    def __call__(self, theta: Array) -> Array:
        """V_D(θ)."""
        value = self.inverse_temperature.astype(theta.dtype) * self.loss(theta, self.data)
        return value if self.prior is None else value + self.prior(theta)

    def certificate(self, *, time: Real, reaction: Real = 1.0, **kwargs: Any) -> PrivacyCertificate:
        """:func:`~dpflows.shk.dp_certificate` for this potential (same keyword arguments).

        Raises:
            ValueError: the potential is stacked (one certificate per member: build them one by one).
        """
        if self.inverse_temperature.ndim or self.sensitivity.ndim:
            raise ValueError(
                "certificate needs a single potential, but this one is stacked (inverse_temperature has shape "
                f"{tuple(self.inverse_temperature.shape)}); call certificate on each member"
            )
        return dp_certificate(
            sensitivity=float(self.sensitivity),
            inverse_temperature=float(self.inverse_temperature),
            time=time,
            reaction=reaction,
            **kwargs,
        )


def exponential_mechanism(
    loss: Callable[[Array, Any], Array],
    data: PyTreeAny,
    *,
    sensitivity: Any,
    epsilon: Any,
    prior: Callable[[Array], Array] | None = None,
) -> ExponentialMechanismPotential:
    """The exponential-mechanism potential V_D(θ) = γ L(θ; D) (+ V₀), γ = ε/(2Δ).

    Sampling π_D exactly is ε-DP; the SHK samplers approach it, with ε(t) from
    :func:`~dpflows.shk.dp_certificate`. ``epsilon`` and ``sensitivity`` become array leaves: a grid
    of potentials at different ε stacks (``dpflows.stack``/``sweep``) and compiles once.

    Args:
        loss: L(θ, data) → scalar (lower is better). Prefer a module-level function (a fresh lambda
            per call recompiles).
        data: the private dataset.
        sensitivity: Δ ≥ sup_θ |L(θ; D) − L(θ; D′)| over neighbouring datasets (your responsibility:
            clip features or bound θ so that it holds).
        epsilon: the exponential mechanism's ε > 0.
        prior: data-independent potential V₀ added to V_D.

    Raises:
        TypeError: ``loss`` is not callable.
        ValueError: ``sensitivity`` or ``epsilon`` is not finite and > 0.
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable, got {type(loss).__name__}")
    _validate.positive("sensitivity", sensitivity)
    _validate.positive("epsilon", epsilon)
    if _validate.is_concrete((epsilon, sensitivity)) and jnp.ndim(epsilon) == 0 and jnp.ndim(sensitivity) == 0:
        epsilon, sensitivity = float(epsilon), float(sensitivity)  # γ in float64, then stored
    gamma = inverse_temperature(epsilon, sensitivity)
    return ExponentialMechanismPotential(loss, data, gamma, sensitivity, epsilon, prior=prior)


def private_sample(
    key: PRNGKeyArray,
    potential: Callable[[Array], Array],
    *,
    initial: Callable[[PRNGKeyArray, int], Array],
    log_density0: Callable[[Array], Array],
    num_particles: int,
    time: Any,
    reaction: Any = 1.0,
    num_steps: int = 1,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
) -> Array:
    """The exact pure-reaction SHK sampler as a mechanism: one released draw X_I.

    x₁..x_N = ``initial(k₀, N)`` (must not depend on the data), then the exact weighted reaction
    to time t in ``num_steps`` steps of :func:`dpflows.run` (step i gets ``fold_in(k₁, i)``), then
    I ~ Cat(w) with key k₂, where (k₀, k₁, k₂) = ``split(key, 3)``. Its privacy is exactly the
    exponential mechanism's over data-independent candidates: ε(t) = (1 − e^{−βt}) · 2γΔ at any N
    (:func:`~dpflows.shk.dp_certificate` with ``transport=0``, ``covers="mechanism"``). Pure JAX: jit
    and vmap over keys (the audit runs it 10⁵ times per dataset).

    Args:
        key: the release key (secret: ``dpflows.privacy.release_key()``).
        potential: V_D, e.g. :func:`exponential_mechanism`.
        initial: ``initial(key, n) -> (n, *event)`` samples of the data-independent ρ₀.
        log_density0: log ρ₀ (up to a constant) of one point.
        num_particles: N ≥ 1 candidates.
        time: t > 0.
        reaction: β ≥ 0.
        num_steps: reaction steps (the exact integrator is exact at any count).
        progress: progress bar (outside jit/vmap only).
        checkpoint: folder for resumable checkpoints (outside jit/vmap only). The checkpoint holds
            the data-dependent weights: keep it as secret as the data.
    """
    num_particles = _validate.positive_int("num_particles", num_particles)
    num_steps = _validate.positive_int("num_steps", num_steps)
    _validate.positive("time", time)
    k_init, k_run, k_out = jr.split(key, 3)
    x0 = initial(k_init, num_particles)
    flow = SHKSampler(potential, step_size=time / num_steps, transport=0.0, reaction=reaction)
    state = flow.init(x0, log_density0=log_density0)
    state, _ = run(flow, state, k_run, num_steps, progress=progress, checkpoint=checkpoint)
    return draw(k_out, state)
