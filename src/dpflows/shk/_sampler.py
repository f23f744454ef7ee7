"""The SHK / birth–death Langevin sampler (the JAX flow), its exact pure-reaction carry and releases."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import logsumexp

from .. import _validate
from .._typing import Array, Float, Info, PRNGKeyArray, PyTreeAny
from ..flow import AbstractFlow, Trace
from ..kde import kde_log_density, silverman_bandwidth, subsample_kde_log_density
from ..langevin import batched_value_and_grad, check_potential, ula_move
from ..particles import Particles, resample_if, reweight
from ..privacy import PrivacyCertificate, Release

__all__ = ["ExactReaction", "SHKSampler", "draw", "release"]

_SCHEMES = ("weighted", "jump")
_DENSITIES = ("exact", "subsample")
# The reference draw of density="subsample" uses fold_in(step key, _DENSITY_STREAM): its own stream,
# so the transport noise and the reaction's draws are the same bits as with density="exact".
_DENSITY_STREAM = 0x6B6465  # "kde"

# A reaction step is healthy when it keeps at least this share of the effective sample size
# (``info["step_ess"]``, see ``_relative_ess``). On the 0.9/0.1 mixture of experiments/shk_mixture.py
# (n = 400, h = 0.02, 400 steps) every step keeps ≥ 0.999 with Silverman's rule or bandwidths 0.3-1,
# the worst step at bandwidth 0.1 keeps 0.41 (biased, not collapsed), and at 0.03 the median step keeps
# 0.53 (weighted) or 0.04 (jump); at ≤ 0.01 nearly every step is below 0.1 (tests/shk/test_shk_leaves_and_health.py).
HEALTHY_STEP_ESS = 0.1
# SHKSampler.diagnose also reports a run when at least this share of its steps was unhealthy.
COLLAPSE_FRACTION = 0.05


# ------------------------------------------------------------------------------- the sampler
def _bandwidth_leaf(value: Any) -> Array:
    """``None`` (Silverman's rule) is stored as NaN, so fixed and adaptive bandwidths are one array leaf."""
    return jnp.asarray(jnp.nan if value is None else value)


class ExactReaction(eqx.Module):
    """Carry of the exact pure-reaction sampler (``state.aux``): log ρ₀ at each (fixed) particle.

    The particles are a sample of ρ₀ that never moves, so ρₜ(xᵢ) = N wᵢ ρ₀(xᵢ) is exact (no KDE).
    """

    log_density0: Float[Array, " n"]


def _exact_log_density(state: Particles) -> Array:
    n = jnp.asarray(state.num_particles, state.logw.dtype)
    return jnp.log(n) + state.logw + state.aux.log_density0


class SHKSampler(AbstractFlow):
    """Birth–death Langevin (SHK) sampler for π ∝ exp(−V), a flow on :class:`~dpflows.Particles`.

    One step of size h (Lie splitting, transport then reaction):

    * transport: xᵢ ← xᵢ − αh∇V(xᵢ) + √(2αh) ξᵢ (ULA at weight α = ``transport``);
    * reaction: Λᵢ = log ρ̂(xᵢ) + V(xᵢ), Λ̄ᵢ = Λᵢ − Σⱼ wⱼΛⱼ, then

      - ``"weighted"``: log wᵢ ← log wᵢ − βhΛ̄ᵢ (normalised); systematic resampling when
        ESS < ``ess_threshold`` · n;
      - ``"jump"``: if Λ̄ᵢ > 0, kill i with probability 1 − e^{−βhΛ̄ᵢ} and replace it by a copy
        of a uniform j ≠ i; if Λ̄ᵢ < 0, clone i with probability 1 − e^{βhΛ̄ᵢ} over a uniform
        j ≠ i. Events are drawn on the pre-step cloud; kills apply first, and when several clones
        target one slot the highest source index wins (deterministic, so runs are reproducible).

    log ρ̂ is a Gaussian KDE (bandwidth ``bandwidth``, or Silverman's rule at every step), computed
    in blocks of ``chunk_size`` rows: O(n²) time, O(n · chunk) memory. ``density="subsample"``
    replaces it, when n > m = ``num_reference``, by the KDE against m references drawn ∝ w from the
    cloud with the step's key (:func:`dpflows.kde.subsample_kde_log_density`: unbiased for ρ̂, O(n·m)
    time and O(chunk · m) memory), with Silverman's rule taken at min(n_eff, m). With ``transport=0`` and a
    known initial density (``init(x, log_density0=...)``), log ρₜ(xᵢ) = log(N wᵢ) + log ρ₀(xᵢ) is
    exact and the weighted reaction is integrated in closed form,

        log wᵢ ← e^{−βh} log wᵢ − (1 − e^{−βh}) (log ρ₀(xᵢ) + V(xᵢ))   (then normalised),

    so after time t the weights are wᵢ ∝ exp(−(1 − e^{−βt})(log ρ₀ + V)(xᵢ)) at any step size
    (METHODS.md §1b); no resampling happens in this mode.

    The transport is :func:`dpflows.langevin.ula_move` at step αh; the weighted reaction is
    :func:`dpflows.particles.reweight` followed by :func:`dpflows.particles.resample_if`.

    ``info``: ``free_energy`` Σ wᵢ Λᵢ = KL(ρ̂‖π) − log Z (after transport, before the reaction), ``ess`` (after the
    reaction, before resampling), ``resampled``, ``kills``, ``births``, ``bandwidth`` (0 in exact mode), and the
    collapse diagnostics: ``step_ess`` r = (Σ wᵢuᵢ)²/Σ wᵢuᵢ² ∈ (0, 1], the share of the effective sample size the
    reaction step keeps (uᵢ its weight factors e^{−βhΛ̄ᵢ}), ``distinct`` the number of distinct positions after the
    step, and ``healthy`` = exact mode or r ≥ ``HEALTHY_STEP_ESS`` (0.1). A KDE bandwidth far below the particle
    spacing makes Λ̄ span many nats, so each step hands the mass to a few particles (on the 0.9/0.1 mixture of
    ``experiments/shk_mixture.py`` with n = 400 a bandwidth ≤ 0.01 puts all of it on the light mode); the runtime
    marks such a run not ok (its last step unhealthy) and :meth:`diagnose` names the cause and the fix.

    Args:
        potential: V for one point; vmapped over particles.
        step_size: h > 0.
        transport: α ≥ 0, weight of the Langevin part.
        reaction: β ≥ 0, rate of the birth–death part.
        bandwidth: KDE bandwidth δ > 0, or ``None`` for Silverman's rule (recomputed every step). Stored
            as an array leaf, ``None`` as NaN, so flows with different fixed bandwidths (or Silverman's
            rule) stack into one sweep.
        scheme: ``"weighted"`` or ``"jump"``.
        grad_potential: optional ∇V for one point (default: closed form or autodiff).
        ess_threshold: resample when ESS < ``ess_threshold`` · n (weighted scheme); 0 never.
        chunk_size: KDE rows per block.
        leave_one_out: leave each particle's own kernel out of its density estimate (default).
            The self term biases log ρ̂ upwards where particles are sparse, so the reaction kills
            the tails: on a 2-D Gaussian at N = 4000 it shrank the variance by ~0.1 at t = 0.5
            against ≤ 0.03 without it (``tests/shk/test_shk_flow.py``).
        density: ``"exact"`` (the O(n²) KDE, the reference and the default) or ``"subsample"`` (O(n·m),
            for large n). Switch from n ≈ 5·10³: at n = 10⁴ the exact step costs 30-90× a ULA step
            and the subsample step (m = 256) 1-2.5×; at n = 10⁵ the subsample step costs ~4× a ULA
            step in d = 2 and ~2× in d = 10 (CPU time; ``python benchmarks/bench_shk.py --scaling``).
            Unused in the exact pure-reaction mode, which needs no density estimate.
        num_reference: m ≥ 1, the references of ``density="subsample"`` (static: it sets shapes);
            cost ∝ m. Its log ρ̂ has relative variance ≈ 1/(m ρ (4πδ²)^{d/2}) (≈ 0.1 mean abs error
            in the bulk of a 2-D Gaussian at m = 256), noise that averages out over steps, and a
            Jensen bias of minus half that (``tests/shk/test_shk_kde_scalable.py``). With n ≤ m the
            exact KDE is used: it is then cheaper and has no noise.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> from dpflows.potentials import GaussianPotential
        >>> flow = SHKSampler(GaussianPotential(jnp.zeros(1), jnp.eye(1)), step_size=0.1, transport=0.0)
        >>> x0 = jr.normal(jr.key(0), (2000, 1)) + 2.0  # samples of ρ₀ = N(2, 1)
        >>> state = flow.init(x0, log_density0=lambda x: -0.5 * jnp.sum((x - 2.0) ** 2))
        >>> for i in range(10):
        ...     state, info = flow.step(state, jr.key(i))
        >>> bool(jnp.abs(state.mean()[0] - 2.0 * jnp.exp(-1.0)) < 0.15)  # ρ₁ = N(2/e, 1)
        True
    """

    potential: Callable[[Array], Array]
    step_size: Float[Array, ...] = eqx.field(converter=jnp.asarray)
    transport: Float[Array, ...] = eqx.field(converter=jnp.asarray, default=1.0)
    reaction: Float[Array, ...] = eqx.field(converter=jnp.asarray, default=1.0)
    bandwidth: Float[Array, ...] = eqx.field(converter=_bandwidth_leaf, default=None)
    scheme: str = eqx.field(static=True, default="weighted")
    grad_potential: Callable[[Array], Array] | None = None
    ess_threshold: Float[Array, ...] = eqx.field(converter=jnp.asarray, default=0.5)
    chunk_size: int = eqx.field(static=True, default=1024)
    leave_one_out: bool = eqx.field(static=True, default=True)
    density: str = eqx.field(static=True, default="exact")
    num_reference: int = eqx.field(static=True, default=256)

    def __check_init__(self):
        if not callable(self.potential):
            raise TypeError(f"potential must be callable, got {type(self.potential).__name__}")
        _validate.one_of("scheme", self.scheme, _SCHEMES)
        _validate.positive("step_size", self.step_size)
        _validate.positive("transport", self.transport, allow_zero=True)
        _validate.positive("reaction", self.reaction, allow_zero=True)
        if _validate.is_concrete(self.bandwidth):
            bw = np.asarray(self.bandwidth)
            _validate.positive("bandwidth", bw[~np.isnan(bw)])  # NaN is the Silverman sentinel
        _validate.in_closed_interval("ess_threshold", self.ess_threshold, 0.0, 1.0)
        _validate.positive_int("chunk_size", self.chunk_size)
        _validate.one_of("density", self.density, _DENSITIES)
        _validate.positive_int("num_reference", self.num_reference)

    # ------------------------------------------------------------------------------------ init
    def init(self, x: Any, logw: Any = None, *, log_density0: Callable[[Array], Array] | Any = None) -> Particles:
        """Particles at ``x`` (samples of ρ₀), t = 0.

        Args:
            x: positions ``(n, *event)``.
            logw: optional normalised log-weights (the jump scheme needs equal weights).
            log_density0: log ρ₀ (up to a constant) as a function of one point, or its values at
                ``x``; switches on the exact pure-reaction mode, which needs ``transport=0`` and
                ``scheme="weighted"``.
        """
        state = Particles.create(x, logw)
        if self.scheme == "jump" and logw is not None and _validate.is_concrete(state.logw):
            lw = np.asarray(state.logw)
            if np.ptp(lw) > 1e-6 * max(1.0, float(np.abs(lw).max())):
                raise ValueError("logw must be uniform for scheme='jump' (resample the cloud first)")
        if log_density0 is None:
            return state
        if self.scheme != "weighted":
            raise ValueError(
                "log_density0 (the exact pure-reaction mode) needs scheme='weighted': killing and cloning "
                f"cannot represent the fractional mass ratios rho_t/rho_0 exactly; got scheme={self.scheme!r}"
            )
        if _validate.is_concrete(self.transport) and np.any(np.asarray(self.transport) != 0):
            raise ValueError(
                "log_density0 (the exact pure-reaction mode) needs transport=0: with transport the "
                f"particles move and ρ₀ no longer gives their density; got transport={np.asarray(self.transport)}"
            )
        if callable(log_density0):
            values = jax.vmap(log_density0)(state.x)
        else:
            values = _validate.floating_array("log_density0", log_density0)
        if values.shape != (state.num_particles,):
            raise ValueError(
                f"log_density0 must give one value per particle, shape ({state.num_particles},), got {values.shape}"
            )
        values = _validate.finite("log_density0", values.astype(state.x.dtype))
        aux = ExactReaction(values)
        return Particles(x=state.x, logw=state.logw, v=state.v, t=state.t, aux=aux)

    # ------------------------------------------------------------------------------------ step
    def _subsampled(self, num_particles: int) -> bool:
        return self.density == "subsample" and num_particles > self.num_reference

    def _log_density(self, state: Particles, key: PRNGKeyArray) -> tuple[Array, Array]:
        if isinstance(state.aux, ExactReaction):
            return _exact_log_density(state), jnp.zeros((), state.x.dtype)
        subsampled = self._subsampled(state.num_particles)
        fixed = self.bandwidth.astype(state.x.dtype)
        # Silverman's rule costs O(nd) against the KDE's O(n²d): always computed, so a sweep may mix
        # fixed bandwidths and the NaN sentinel in one compiled program. An estimate on m centres
        # has an m-sample KDE's variance, so its rule uses min(n_eff, m).
        cap = self.num_reference if subsampled else None
        silverman = silverman_bandwidth(state.x, state.logw, max_sample_size=cap)
        # A collapsed cloud (all particles equal) has σ̂ = 0: floor the bandwidth.
        silverman = jnp.maximum(silverman, jnp.finfo(state.x.dtype).eps ** 0.5)
        bw = jnp.where(jnp.isnan(fixed), silverman, fixed)
        options = {"bandwidth": bw, "chunk_size": self.chunk_size, "leave_one_out": self.leave_one_out}
        if subsampled:
            k_density = jr.fold_in(key, _DENSITY_STREAM)
            log_rho = subsample_kde_log_density(
                k_density, state.x, state.logw, num_reference=self.num_reference, **options
            )
        else:
            log_rho = kde_log_density(state.x, state.logw, **options)
        return log_rho, bw

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One transport + reaction step (see the class docstring)."""
        dtype = state.x.dtype
        h = self.step_size.astype(dtype)
        alpha = self.transport.astype(dtype)
        beta = self.reaction.astype(dtype)
        k_noise, k_react = jr.split(key)
        exact = isinstance(state.aux, ExactReaction)
        x = state.x
        if exact:
            check_potential(self.potential, x)
            value = jax.vmap(self.potential)(x)
        else:
            value, grad = batched_value_and_grad(self.potential, self.grad_potential, x)
            x = ula_move(x, grad, alpha * h, k_noise)  # ULA at step αh
            value = jax.vmap(self.potential)(x) if self._moves() else value
        moved = Particles(x=x, logw=state.logw, v=state.v, t=state.t, aux=state.aux)
        log_rho, bw = self._log_density(moved, key)
        lam = log_rho + value
        w = moved.weights
        free_energy = jnp.sum(w * lam)
        lam_bar = lam - free_energy
        if self.scheme == "weighted":
            new, info, increment = self._weighted(moved, lam, lam_bar, h, beta, k_react, exact)
        else:
            new, info = self._jump(moved, lam_bar, h, beta, k_react)
            increment = -beta * h * lam_bar
        new = Particles(x=new.x, logw=new.logw, v=new.v, t=state.t + h.astype(state.t.dtype), aux=new.aux)
        step_ess = _relative_ess(moved.logw, increment)
        healthy = jnp.asarray(exact) | (step_ess >= jnp.asarray(HEALTHY_STEP_ESS, step_ess.dtype))
        info = {
            "free_energy": free_energy,
            "bandwidth": bw,
            **info,
            "step_ess": step_ess,
            "distinct": _count_distinct(new.x),
            "healthy": healthy,
        }
        return new, info

    def diagnose(self, trace: Trace, *, warn: bool = True) -> str | None:
        """Name the cause and the fix when a run's reaction degenerated (particle collapse); else ``None``.

        A reaction step is unhealthy when it keeps less than ``HEALTHY_STEP_ESS`` of the effective
        sample size (``info["step_ess"]``): a few particles inherit the mass, and ``info["distinct"]``
        counts the distinct positions left. A run is reported when its last step is unhealthy (the
        runtime then also sets ``trace.ok`` False) or when at least ``COLLAPSE_FRACTION`` (5 %) of its
        steps were: a collapse builds up over many such steps, and the last one alone can look fine
        (on the 0.9/0.1 mixture at bandwidth 0.03, 20 % of the steps are unhealthy, the last one
        not). The usual cause is a KDE bandwidth far below the particle spacing: log ρ̂ is then
        dominated by each particle's own neighbourhood and Λ̄ spans tens of nats. Not detected: a
        biased but uncollapsed run (bandwidth 0.1 there: no unhealthy step, light mode at 0.3
        instead of 0.1). Host-side; works on the trace of a :func:`~dpflows.run` or of a
        :func:`~dpflows.sweep` (one message for the failing members).

        Args:
            trace: the trace of a run of this flow.
            warn: also emit the message as a ``RuntimeWarning``.

        Returns:
            The message, or ``None`` when the run is healthy.
        """
        if "healthy" not in trace.info:
            raise ValueError(
                "trace has no info['healthy']: diagnose needs the trace of an SHKSampler run with at least one step"
            )
        healthy_steps = np.asarray(trace.info["healthy"])
        members_axis = healthy_steps.reshape(-1, healthy_steps.shape[-1])  # (members, steps)
        unhealthy_share = np.mean(~members_axis, axis=1)
        bad = ~members_axis[:, -1] | (unhealthy_share >= COLLAPSE_FRACTION)
        if not np.any(bad):
            return None
        last = lambda name: np.asarray(trace.info[name]).reshape(members_axis.shape)[bad, -1]  # noqa: E731
        where = "" if healthy_steps.ndim == 1 else f" in {int(bad.sum())} of {bad.size} sweep members"
        share = 100 * float(unhealthy_share[bad].max())
        step_ess, distinct, bandwidth = (float(last(k).min()) for k in ("step_ess", "distinct", "bandwidth"))
        msg = (
            f"SHKSampler collapsed{where}: up to {share:.0f}% of its reaction steps kept less than "
            f"{HEALTHY_STEP_ESS} of the effective sample size (last step: {step_ess:.3g}), and {int(distinct)} "
            f"distinct particle positions remain. Cause: the KDE bandwidth ({bandwidth:.3g}) is small against the "
            "particle spacing, so log rho_hat is dominated by each particle's neighbourhood and the reaction moves "
            "all the mass onto a few particles. Fix: a larger bandwidth, or bandwidth=None (Silverman's rule); or a "
            "smaller step_size or reaction."
        )
        if warn:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return msg

    def _moves(self) -> bool:
        # Positions move unless transport is a concrete zero (then V(x) is reused, not recomputed).
        return not (_validate.is_concrete(self.transport) and np.all(np.asarray(self.transport) == 0))

    def _weighted(self, state, lam, lam_bar, h, beta, key, exact):
        zero = jnp.zeros((), jnp.int32)
        if exact:
            # Closed-form integration of d log w = −β(log w + log N + log ρ₀ + V) dt + c(t) dt.
            decay = jnp.exp(-beta * h)
            logw = decay * state.logw - (-jnp.expm1(-beta * h)) * (lam - state.logw)
            logw = logw - logsumexp(logw)
            new = Particles(x=state.x, logw=logw, v=state.v, t=state.t, aux=state.aux)
            info = {"ess": new.ess(), "resampled": jnp.zeros((), bool), "kills": zero, "births": zero}
            return new, info, logw - state.logw
        reacted = reweight(state, lam, beta * h)  # log w ← log w − βh Λ̄, normalised
        ess = reacted.ess()
        new, do = resample_if(key, reacted, self.ess_threshold)
        info = {"ess": ess, "resampled": do, "kills": zero, "births": zero}
        return new, info, -beta * h * lam_bar

    def _jump(self, state, lam_bar, h, beta, key):
        n = state.num_particles
        k_u, k_j = jr.split(key)
        u = jr.uniform(k_u, (n,), dtype=lam_bar.dtype)
        rate = beta * h * lam_bar
        kill = (lam_bar > 0) & (u < -jnp.expm1(-rate))
        birth = (lam_bar < 0) & (u < -jnp.expm1(rate))
        idx = jnp.arange(n, dtype=jnp.int32)
        partner = (idx + 1 + jr.randint(k_j, (n,), 0, max(n - 1, 1), dtype=jnp.int32)) % n  # uniform j ≠ i
        if n == 1:
            kill, birth = kill & False, birth & False
        src = jnp.where(kill, partner, idx)
        winner = jnp.full((n,), -1, idx.dtype).at[jnp.where(birth, partner, n)].max(idx, mode="drop")
        src = jnp.where(winner >= 0, winner, src)
        gather = _gather(src)
        new = Particles(x=gather(state.x), logw=state.logw, v=gather(state.v), t=state.t, aux=state.aux)
        info = {
            "ess": jnp.asarray(n, lam_bar.dtype),
            "resampled": jnp.zeros((), bool),
            "kills": jnp.sum(kill).astype(jnp.int32),
            "births": jnp.sum(birth).astype(jnp.int32),
        }
        return new, info


def _relative_ess(logw: Array, increment: Array) -> Array:
    """Share r = (Σ wᵢuᵢ)² / Σ wᵢuᵢ² ∈ (0, 1] for the step's weight factors uᵢ = e^{incrementᵢ}.

    The share of the effective sample size one reaction step keeps: for equal weights the reweighted
    cloud has ESS = r·n. It does not depend on the normalisation of ``increment``.
    """
    inc = increment - jnp.max(jnp.where(jnp.isfinite(logw), increment, -jnp.inf))
    return jnp.exp(2.0 * logsumexp(logw + inc) - logsumexp(logw + 2.0 * inc))


def _count_distinct(x: Array) -> Array:
    """Number of distinct positions (copies made by resampling or cloning count once).

    Rows are projected on the fixed direction (2 + cos k)ₖ (entries linearly independent over ℚ,
    so distinct lattice points do not collide) and the sorted projections compared: equal rows give
    equal projections exactly, distinct rows almost surely not. The projections are sorted as their
    integer bit patterns (copies are bit-identical), which XLA:CPU sorts ~4× faster than floats
    (at n = 10⁵ the float sort cost more than a ULA step). O(n log n), against the KDE's O(n²) or O(nm).
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    direction = 2.0 + jnp.cos(jnp.arange(1, flat.shape[1] + 1, dtype=flat.dtype))
    proj = flat @ direction
    bits = jax.lax.bitcast_convert_type(proj, jnp.dtype(f"int{8 * proj.dtype.itemsize}"))
    bits = jnp.sort(bits)
    return (1 + jnp.sum(bits[1:] != bits[:-1])).astype(jnp.int32)


def _gather(idx: Array) -> Callable[[PyTreeAny], PyTreeAny]:
    """``tree ↦ tree[idx]`` along the particle axis."""
    return lambda tree: jax.tree_util.tree_map(lambda a: a[idx], tree)


# ----------------------------------------------------------------------------------- releases
def draw(key: PRNGKeyArray, particles: Particles) -> Array:
    """One position X_I with I ~ Categorical(w): a single draw from the weighted cloud."""
    i = jr.categorical(key, particles.logw)
    return particles.x[i]


def release(key: PRNGKeyArray, particles: Particles, certificate: PrivacyCertificate) -> Release:
    """Release one draw X_I, I ~ Cat(w), with the certificate that covers it.

    The key must be secret (``dpflows.privacy.release_key()``); a certificate that only covers an
    ideal flow is passed through unchanged, and its ``str`` says so.
    """
    if not isinstance(certificate, PrivacyCertificate):
        raise TypeError(f"certificate must be a PrivacyCertificate, got {type(certificate).__name__}")
    return Release(draw(key, particles), certificate)
