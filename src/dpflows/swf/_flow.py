"""The DP sliced-Wasserstein flow: post-processing of a :class:`SlicedRelease` (METHODS.md §4b, §4c)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.scipy.special import logsumexp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .. import _validate
from .._typing import Array, Bool, Float, Info, PRNGKeyArray, Real
from ..flow import AbstractFlow
from ..particles import Particles
from ..privacy import PrivacyCertificate, PrivacyLedger
from ._drift import _drift
from ._mechanism import SlicedRelease, private_release

__all__ = ["DPSlicedWassersteinFlow"]


class DPSlicedWassersteinFlow(AbstractFlow):
    """The (ε, δ)-DP sliced-Wasserstein flow toward private data (DPSWflow / DPSWflow-r, METHODS.md §4).

    Pure post-processing of a :class:`SlicedRelease` (from :func:`private_release`): the flow never
    sees the data, so every step, run, sweep or re-run costs no further privacy. With T releases,
    step i uses release ``i mod T`` (one release: DPSWflow; one per step, Poisson batches: DPSWflow-r).

    One step with L directions θ_l and particle-side noise of the same σ_t (smoothing on both sides):

        u_il = ⟨θ_l, x_i⟩ + σ_t ξ_il,    q_il = Q_l(F^μ_l(u_il)),
        x_i ← x_i − τ (1/L) Σ_l (u_il − q_il) θ_l + √(2λτ) ε_i,

    where F^μ_l is the (weighted, mid-rank) CDF of the particles' noisy projections and Q_l the
    quantile function of the release's l-th row (exact, or its P-percentile table). ``info``:
    ``sliced_w2`` = Σ_i w_i mean_l (u_il − q_il)², ``energy`` = ½ ``sliced_w2`` (the flow's
    functional without its entropy term; finite unless the state degenerates), ``drift_norm`` and
    ``release`` (the index used). Differentiable in ``x`` and ``step_size`` almost everywhere.

    Args:
        release: the published release.
        step_size: τ > 0 (the paper's dt = 3 for d = 8 latents).
        entropy: λ ≥ 0, the Brownian term √(2λτ) ε (0 in the paper's configs).
        num_subprojections: L directions drawn (with replacement) from the k each step; None uses all.
        smooth_particles: add N(0, σ_t²) to the particle projections too (the paper's smoothing).

    Use :meth:`from_data` to draw the release and build the flow in one call.
    """

    release: SlicedRelease
    step_size: Float[Array, "*batch"] = eqx.field(converter=jnp.asarray)
    entropy: Float[Array, "*batch"] = eqx.field(converter=jnp.asarray)
    smooth_particles: Bool[Array, "*batch"] = eqx.field(converter=jnp.asarray)
    num_subprojections: int | None = eqx.field(static=True)

    def __init__(
        self,
        release: SlicedRelease,
        *,
        step_size: Any,
        entropy: Any = 0.0,
        num_subprojections: int | None = None,
        smooth_particles: Any = True,
    ):
        """Keep the release and the post-processing hyper-parameters (no privacy is spent here)."""
        if not isinstance(release, SlicedRelease):
            raise TypeError(
                f"release must be a SlicedRelease (from dpflows.swf.private_release), got {type(release).__name__}; "
                "to build from private rows use DPSlicedWassersteinFlow.from_data"
            )
        if num_subprojections is not None:
            _validate.positive_int("num_subprojections", num_subprojections)
        self.release = release
        self.step_size = step_size
        self.entropy = entropy
        self.smooth_particles = smooth_particles
        self.num_subprojections = num_subprojections

    def __check_init__(self):
        _validate.positive("step_size", self.step_size)
        _validate.positive("entropy", self.entropy, allow_zero=True)

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        epsilon: Real,
        delta: Real,
        num_projections: int,
        step_size: Any,
        num_steps: int | None = None,
        resample: bool = False,
        batch_size: int | None = None,
        entropy: Any = 0.0,
        num_quantiles: int | None = None,
        num_subprojections: int | None = None,
        sensitivity: str = "chernoff",
        smooth_particles: Any = True,
        key: PRNGKeyArray | None = None,
    ) -> DPSlicedWassersteinFlow:
        """Draw the release with :func:`private_release` (spends the budget) and build the flow on it.

        ``resample=False`` (DPSWflow): one release of k directions; ``num_steps`` is not needed.
        ``resample=True`` (DPSWflow-r): ``num_steps`` releases, each with fresh directions and a
        Poisson batch of expected size ``batch_size`` (all rows if None). The other arguments are
        those of :func:`private_release` and of the constructor. Post-processing arguments are
        checked first, so a bad one raises before any privacy is spent.
        """
        if not isinstance(resample, bool):
            raise TypeError(f"resample must be a bool, got {resample!r}")
        if num_steps is not None:
            num_steps = _validate.positive_int("num_steps", num_steps)
        if resample and num_steps is None:
            raise ValueError("num_steps must be given with resample=True (one release per step)")
        if batch_size is not None and not resample:
            raise ValueError("batch_size is only used with resample=True (DPSWflow-r draws a batch per step)")
        _validate.positive("step_size", step_size)
        _validate.positive("entropy", entropy, allow_zero=True)
        if num_subprojections is not None:
            _validate.positive_int("num_subprojections", num_subprojections)
        release, _ = private_release(
            key,
            data,
            num_projections=num_projections,
            epsilon=epsilon,
            delta=delta,
            num_releases=num_steps if resample else 1,
            batch_size=batch_size,
            num_quantiles=num_quantiles,
            sensitivity=sensitivity,
        )
        return cls(
            release,
            step_size=step_size,
            entropy=entropy,
            num_subprojections=num_subprojections,
            smooth_particles=smooth_particles,
        )

    # -------------------------------------------------------------------------------- privacy
    @property
    def certificate(self) -> PrivacyCertificate | tuple[PrivacyCertificate, ...]:
        """The release's guarantee, which covers the flow (one per member for a stacked flow)."""
        return self.release.certificate

    @property
    def ledger(self) -> PrivacyLedger:
        """The releases as a :class:`~dpflows.privacy.PrivacyLedger` (to compose with other work)."""
        return self.release.ledger

    # ----------------------------------------------------------------------------------- flow
    def init(self, x: Any, logw: Any = None) -> Particles:
        """Particles at ``x`` (n, d) with a release counter in ``aux``."""
        x = _validate.floating_array("x", x)
        d = self.release.dim
        if x.ndim != 2 or x.shape[1] != d or x.shape[0] == 0:
            raise ValueError(f"x must have shape (n, {d}) with n >= 1 to match the data, got {x.shape}")
        return Particles.create(_validate.finite("x", x), logw, aux={"release": jnp.zeros((), jnp.int32)})

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One step with release ``aux["release"] mod T`` (see the class docstring)."""
        return _step(self, state, key)

    def shard(self, state: Particles, mesh: jax.sharding.Mesh | None = None) -> Particles:
        """Place the particles across devices along the particle axis (replicate the rest).

        Under ``jit`` the projections, sorts and drift then run on the sharded cloud (XLA inserts
        the collectives). With one device, or n not divisible by the device count, returns ``state``.
        """
        devices = jax.devices() if mesh is None else mesh.devices.ravel()
        n = state.x.shape[0]
        if len(devices) < 2 or n % len(devices):
            return state
        mesh = mesh or jax.make_mesh(
            (len(devices),), ("particles",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
        )
        axis = mesh.axis_names[0]
        rows, rep = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
        return Particles(
            x=jax.device_put(state.x, rows),
            logw=jax.device_put(state.logw, rows),
            v=jax.device_put(state.v, rows),
            t=jax.device_put(state.t, rep),
            aux=jax.device_put(state.aux, rep),
        )


@eqx.filter_jit  # one program, so eager (notebook) steps compile once
def _step(flow: DPSlicedWassersteinFlow, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
    rel = flow.release
    x, dtype = state.x, state.x.dtype
    counter = jnp.zeros((), jnp.int32) if state.aux is None else state.aux["release"]
    r = counter % rel.directions.shape[0]
    theta, table = rel.directions[r].astype(dtype), rel.tables[r].astype(dtype)
    k_sub, k_smooth, k_brown = jr.split(key, 3)
    if flow.num_subprojections is not None:
        idx = jr.randint(k_sub, (flow.num_subprojections,), 0, theta.shape[0])
        theta, table = theta[idx], table[idx]
    std = jnp.where(flow.smooth_particles, rel.noise_std[r].astype(dtype), jnp.zeros((), dtype))
    noise = std * jr.normal(k_smooth, (theta.shape[0], x.shape[0]), dtype=dtype)
    w = jnp.exp(state.logw - logsumexp(state.logw)).astype(dtype)
    drift, sw2 = _drift(x, w, theta, table, rel.counts[r], noise, rel.num_quantiles is not None)
    drift = jnp.where(rel.counts[r] > 0, drift, 0.0)  # an empty Poisson batch gives no target
    tau, lam = flow.step_size.astype(dtype), flow.entropy.astype(dtype)
    x_new = x - tau * drift + jnp.sqrt(2 * lam * tau) * jr.normal(k_brown, x.shape, dtype=dtype)
    new = eqx.tree_at(
        lambda s: (s.x, s.t, s.aux), state, (x_new, state.t + tau, {"release": counter + 1}), is_leaf=_is_none
    )
    info = {
        "sliced_w2": sw2,
        "energy": 0.5 * sw2,
        "drift_norm": jnp.sqrt(jnp.mean(jnp.sum(drift**2, axis=1))),
        "release": r,
    }
    return new, info


def _is_none(x: Any) -> bool:
    return x is None
