"""Shared test helpers: tree comparisons, closed-form targets and the registry of public flows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from dpflows import AbstractFlow, Particles
from dpflows.langevin import ULA
from dpflows.potentials import GaussianPotential


def tree_allclose(a, b, *, rtol=1e-5, atol=1e-8) -> bool:
    """All leaves equal in structure and close in value."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol) for x, y in zip(la, lb, strict=True))


def max_abs_diff(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def gaussian_target(dim: int = 2, dtype=jnp.float32) -> GaussianPotential:
    """A fixed, rotated anisotropic Gaussian (eigenvalues of the precision 1 and 4)."""
    angle = 0.3
    rot = jnp.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=dtype)
    precision = rot @ jnp.diag(jnp.array([1.0, 4.0], dtype=dtype)) @ rot.T
    if dim != 2:
        precision = jnp.eye(dim, dtype=dtype) + 0.1 * jnp.ones((dim, dim), dtype=dtype)
    mean = jnp.arange(dim, dtype=dtype) * 0.5 + 1.0
    return GaussianPotential(mean, 0.5 * (precision + precision.T))


def quadratic_bowl(x):
    """V(x) = ½‖x‖² + ¼ Σ xᵢ⁴, a module-level non-Gaussian potential (autodiff gradient)."""
    return 0.5 * jnp.sum(x**2) + 0.25 * jnp.sum(x**4)


@dataclass(frozen=True)
class FlowCase:
    """One registry entry: how to build a tiny flow, its initial positions, and a swept field."""

    name: str
    make: Callable[..., AbstractFlow]  # make(dtype=..., **hyper) -> flow
    hyper: dict  # hyper-parameter values for a second member of a sweep
    event_shape: tuple[int, ...] = (2,)
    num_particles: int = 16
    owns_aux: bool = False  # the flow keeps its own carry in ``aux`` (e.g. warm-start potentials)
    fixed_size: bool = False  # the flow only accepts ``num_particles`` particles (a stored shape)

    def positions(self, key, dtype=jnp.float32):
        return jr.normal(key, (self.num_particles, *self.event_shape), dtype=dtype)


def _ula(dtype=jnp.float32, step_size=0.05):
    return ULA(gaussian_target(dtype=dtype), step_size=jnp.asarray(step_size, dtype))


def _ula_autodiff(dtype=jnp.float32, step_size=0.02):
    return ULA(quadratic_bowl, step_size=jnp.asarray(step_size, dtype))


def _shk(dtype=jnp.float32, step_size=0.05, scheme="weighted"):
    from dpflows.shk import SHKSampler

    return SHKSampler(gaussian_target(dtype=dtype), step_size=jnp.asarray(step_size, dtype), scheme=scheme)


def _shk_jump(dtype=jnp.float32, step_size=0.05):
    return _shk(dtype, step_size, scheme="jump")


def _shk_fixed_bandwidth(dtype=jnp.float32, step_size=0.05, reaction=1.0):
    from dpflows.shk import SHKSampler

    return SHKSampler(
        quadratic_bowl,
        step_size=jnp.asarray(step_size, dtype),
        reaction=jnp.asarray(reaction, dtype),
        bandwidth=jnp.asarray(0.3, dtype),
        chunk_size=5,  # blocks of 5 rows over 16 particles: exercises the padded last block
    )


def _shk_em_loss(theta, centre):
    """L(θ; D) = Σ|θ − c|, the exponential-mechanism loss of the ε-sweep registry entry."""
    return jnp.sum(jnp.abs(theta - centre))


def _shk_exponential_mechanism(dtype=jnp.float32, epsilon=1.0):
    from dpflows.shk import SHKSampler, exponential_mechanism

    potential = exponential_mechanism(
        _shk_em_loss,
        jnp.asarray([0.5, -0.5], dtype),
        sensitivity=jnp.asarray(2.0, dtype),
        epsilon=jnp.asarray(epsilon, dtype),
    )
    return SHKSampler(potential, step_size=jnp.asarray(0.05, dtype), bandwidth=jnp.asarray(0.5, dtype))


def _ldp_denoiser(dtype=jnp.float32, step_size=0.5, loss="entropic", sigma=0.5, epsilon=None, threshold=1e-3):
    """The LDP particle denoiser; ``sigma`` (the privacy noise), ``epsilon`` and ``step_size`` are leaves."""
    from dpflows.ldp import GaussianNoise, ParticleDenoiser

    y = (jr.normal(jr.key(11), (24, 2), dtype=jnp.float32) * 1.2 + 0.3).astype(dtype)  # same data in f32/f64
    return ParticleDenoiser(
        y,
        noise=GaussianNoise(jnp.asarray(sigma, dtype)),
        step_size=jnp.asarray(step_size, dtype),
        loss=loss,
        epsilon=None if epsilon is None else jnp.asarray(epsilon, dtype),
        threshold=threshold,
    )


def muon_objective(w, weights):
    """A module-level mean-field objective on (n, 3, 2) matrices: squared mean plus a quartic."""
    mean = jnp.tensordot(weights.astype(w.dtype), w, axes=1)
    target = jnp.arange(6, dtype=w.dtype).reshape(3, 2) / 6
    return 0.5 * jnp.sum((mean - target) ** 2) + 0.05 * jnp.sum(weights[:, None, None].astype(w.dtype) * w**4)


def muon_block_objective(theta, weights):
    """The same objective written over two blocks of each particle."""
    return muon_objective(jnp.concatenate([theta["a"], theta["b"]], axis=1), weights)


def _muon(dtype=jnp.float32, step_size=0.05):
    from dpflows.muon import MuonMeanFieldFlow

    return MuonMeanFieldFlow(
        muon_objective,
        eps=jnp.asarray(0.3, dtype),
        damping=jnp.asarray(1.0, dtype),
        step_size=jnp.asarray(step_size, dtype),
    )


def _muon_blocks(dtype=jnp.float32, damping=1.0):
    from dpflows.muon import MuonMeanFieldFlow

    return MuonMeanFieldFlow(
        muon_block_objective,
        eps={"a": jnp.asarray(0.1, dtype), "b": jnp.asarray(1.0, dtype)},
        damping=jnp.asarray(damping, dtype),
        step_size=jnp.asarray(0.05, dtype),
        blocks={"a": (1, 2), "b": (2, 2)},
        method="newton",
    )


def hopfield_patterns(dtype=jnp.float32, m=8):
    """Three 2-D Gaussian clouds of m points around (3, 0), (−3, 0) and (0, 3)."""
    centres = jnp.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]], dtype=jnp.float32)
    z = jr.normal(jr.key(21), (3, m, 2), dtype=jnp.float32)
    return (centres[:, None, :] + z).astype(dtype)  # same points in f32/f64


def _hopfield(dtype=jnp.float32, beta=4.0, step_size=0.5):
    from dpflows.hopfield import SinkhornHopfield

    return SinkhornHopfield(
        hopfield_patterns(dtype), epsilon=jnp.asarray(0.2, dtype), beta=beta, step_size=step_size, threshold=1e-4
    )


def _hopfield_euclidean(dtype=jnp.float32, beta=0.5):
    from dpflows.hopfield import EuclideanHopfield

    return EuclideanHopfield(hopfield_patterns(dtype, m=16), beta=beta, step_size=0.5)


def swf_data(dtype=jnp.float32, m=40):
    """Private rows for the sliced flow: a 2-D blob at (0.4, 0.2), inside the unit ball."""
    y = jr.normal(jr.key(31), (m, 2), dtype=jnp.float32) * 0.15 + jnp.array([[0.4, 0.2]], dtype=jnp.float32)
    return y.astype(dtype)  # same points in f32/f64


def _swf(dtype=jnp.float32, step_size=0.5, resample=False, epsilon=5.0):
    from dpflows.swf import DPSlicedWassersteinFlow

    return DPSlicedWassersteinFlow.from_data(
        swf_data(dtype),
        epsilon=epsilon,
        delta=1e-5,
        num_projections=8,
        step_size=jnp.asarray(step_size, dtype),
        num_steps=6,
        resample=resample,
        batch_size=20 if resample else None,
        key=jr.key(41),
    )


# Every public flow at tiny size: a new flow earns the conformance suite by adding one line here.
# (The sliced flow's resampled mode runs the same step on release t instead of 0; its own tests run it.)
FLOWS = [
    FlowCase("ula_gaussian", _ula, {"step_size": 0.1}),
    FlowCase("ula_autodiff", _ula_autodiff, {"step_size": 0.04}),
    FlowCase("shk_weighted", _shk, {"step_size": 0.1}),
    FlowCase("shk_jump", _shk_jump, {"step_size": 0.1}),
    FlowCase("shk_fixed_bandwidth", _shk_fixed_bandwidth, {"reaction": 2.0}),
    FlowCase("shk_exponential_mechanism", _shk_exponential_mechanism, {"epsilon": 4.0}),  # the privacy knob
    FlowCase("ldp_denoiser", _ldp_denoiser, {"sigma": 0.8, "threshold": 1e-4}, owns_aux=True),  # privacy knob
    FlowCase("muon_meanfield", _muon, {"step_size": 0.1}, event_shape=(3, 2), owns_aux=True),
    FlowCase("muon_blocks", _muon_blocks, {"damping": 2.0}, event_shape=(6,), owns_aux=True),
    FlowCase("hopfield_sinkhorn", _hopfield, {"beta": 8.0}, owns_aux=True),
    FlowCase("hopfield_euclidean", _hopfield_euclidean, {"beta": 1.0}, fixed_size=True),
    FlowCase("swf_fixed", _swf, {"step_size": 0.8}, owns_aux=True),
    FlowCase("swf_epsilon", _swf, {"epsilon": 10.0}, owns_aux=True),  # the privacy knob: a new release, no recompile
]


class NoiseFlow(AbstractFlow):
    """Test flow: x ← a·x + ξ; reports the raw noise so tests can compare draws bitwise."""

    a: jax.Array = eqx.field(converter=jnp.asarray)

    def init(self, x, logw=None):
        return Particles.create(x, logw)

    def step(self, state, key):
        noise = jr.normal(key, state.x.shape, dtype=state.x.dtype)
        x = self.a.astype(state.x.dtype) * state.x + noise
        return eqx.tree_at(lambda s: s.x, state, x), {"noise": noise}
