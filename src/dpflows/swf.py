"""DP sliced-Wasserstein flow: a generative particle flow driven by privatised random projections (METHODS.md §4).

The private data ν = (1/m) Σ_j δ_{y_j} (rows clipped to the unit ball) is seen only through releases

    V_t = Θ_t Yᵀ + Z_t,   Θ_t ∈ ℝ^{k×d} uniform unit rows,   Z_t ~ N(0, σ_t²) i.i.d.,

the DP-SWD Gaussian mechanism (Rakotomamonjy & Ralaivola 2021). **All releases are drawn when the flow
is constructed**; the flow object keeps the directions and the sorted noisy projections (never the
data), so every step, run, sweep or re-run is post-processing and costs no further privacy.

* ``resample=False`` (DPSWflow): one release of k directions; a step uses all of them (or
  ``num_subprojections`` drawn with replacement, as the official fixed-θ code does).
* ``resample=True`` (DPSWflow-r): ``num_steps`` releases, each with fresh directions and a
  Poisson-subsampled batch (rate q = ``batch_size``/m); step t uses release t (cycling after
  ``num_steps``).

One step (§4b), with L directions θ_l, particle-side noise of the same σ_t ("smoothing on both sides"):

    u_il = ⟨θ_l, x_i⟩ + σ_t ξ_il,    q_il = Q_l(F^μ_l(u_il)),
    x_i ← x_i − τ (1/L) Σ_l (u_il − q_il) θ_l + √(2λτ) ε_i,

where F^μ_l is the (weighted, mid-rank) CDF of the particles' noisy projections and Q_l the quantile
function of the release's l-th row: exact (sort-based) by default, or tabulated on P percentiles as
in the official code (``num_quantiles=P``). λ = ``entropy`` (the Brownian term; 0 in the paper's
configs).

**Privacy** (:attr:`DPSlicedWassersteinFlow.certificate`, ``covers="mechanism"``: the released
projections, hence the flow, under the threat model of :data:`dpflows.privacy.THREAT_MODEL`):

* sensitivity: for a replace-one neighbour ‖y − y'‖ ≤ 2 and ‖Θᵀ(y − y')‖² = 4 Σ_l ⟨θ_l, z⟩² with
  ⟨θ, z⟩² ~ Beta(½, (d−1)/2) for a unit z. ``sensitivity="chernoff"`` (default) bounds the sum's
  tail by the exact Beta moment-generating function (₁F₁(½; d/2; λ)); it holds with probability
  ≥ 1 − δ_s over Θ, and the failure probability is charged to δ (δ/2, split over the releases).
  ``"clt"`` is the paper's normal approximation and ``"bernstein"`` its k ≤ 30 form. **The CLT form
  is not a bound**: at the paper's d = 8, k = 70 the sum exceeds it with probability 2.1e-3 at
  δ_s = 1e-3 and 4e-5 at δ_s = 5e-6 (tested). ``"operator"`` uses Δ_t = 2‖Θ_t‖₂ of the drawn
  directions: deterministic, no δ charged (often the tightest when d is small).
* noise: σ_t = s·Δ_t. One release: s from the analytic Gaussian mechanism (Balle & Wang 2018), not
  the classical √(2 ln(1.25/δ))/ε the official code uses (not private at ε = 10). Several
  (subsampled) releases: s by bisection so that dp-accounting's PLD accountant meets (ε, δ − δ_s);
  its RDP accountant is reported next to it.
* ``epsilon=math.inf`` runs the same flow without noise (no guarantee, ``covers="none"``).

Not covered: floating-point attacks on unsnapped Gaussian noise and a non-secret ``key`` (draw it
with :func:`dpflows.privacy.release_key`, the default).
"""

from __future__ import annotations

import functools as ft
import math
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from jax.scipy.special import logsumexp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import optimize, special, stats

from . import _validate, ot
from ._typing import Array, Float, Info, PRNGKeyArray, Real
from .flow import AbstractFlow
from .particles import Particles
from .privacy import (
    PrivacyCertificate,
    PrivacyLedger,
    calibrate_gaussian,
    calibrate_noise_multiplier,
    gaussian_epsilon,
)
from .privacy.mechanisms import project_ball, release_key

__all__ = [
    "SENSITIVITY_METHODS",
    "DPSlicedWassersteinFlow",
    "GeneratorResult",
    "SlicedRelease",
    "private_release",
    "sensitivity_bound",
    "sliced_drift",
    "train_sliced_generator",
]

SENSITIVITY_METHODS = ("chernoff", "clt", "bernstein", "operator")


# ------------------------------------------------------------------------------ sensitivity
def _chernoff_sum(k: int, d: int, failure: float) -> float:
    """Smallest t with inf_λ e^{−λt} M(λ)^k ≤ failure, M(λ) = ₁F₁(½; d/2; λ) the Beta(½,(d−1)/2) MGF."""

    def log_mgf(lam: float) -> float:
        return float(np.log(special.hyp1f1(0.5, d / 2, lam)))

    def excess(t: float) -> float:  # > 0 while t is not yet a (1 − failure)-bound
        res = optimize.minimize_scalar(lambda lam: -lam * t + k * log_mgf(lam), bounds=(0.0, 600.0), method="bounded")
        return float(res.fun) - math.log(failure)

    hi = k * (1 - 1e-12)
    if excess(hi) > 0:
        return float(k)
    # A minimiser found only approximately overstates the infimum, so t comes out conservative.
    return float(optimize.brentq(excess, k / d, hi, xtol=1e-10))


def sensitivity_bound(num_projections: int, dim: int, failure_probability: Real, method: str = "chernoff") -> float:
    """L2 sensitivity Δ of y ↦ Θy for replace-one neighbours in the unit ball, Θ with k uniform unit rows.

    P_Θ(‖Θ(y − y')‖ > Δ) ≤ δ_s for every fixed pair with ‖y‖, ‖y'‖ ≤ 1 (and Δ ≤ 2√k always). With
    S = Σ_l ⟨θ_l, z⟩², z = (y − y')/‖y − y'‖, the bound is Δ = 2√t with P(S > t) ≤ δ_s:

    * ``"chernoff"``: t from the exact Beta(½, (d−1)/2) MGF (a rigorous bound, within ~6% of the
      true quantile at the paper's sizes);
    * ``"clt"``: t = k/d + z_{1−δ_s}/d · √(2k(d−1)/(d+2)) (the paper's code for k > 30; an
      approximation that the skewed sum exceeds more often than δ_s);
    * ``"bernstein"``: t = k/d + ⅔ log(1/δ_s) + (2/d)√(k(d−1)/(d+2) log(1/δ_s)) (rigorous, loose).

    ``"operator"`` has no such constant (it depends on the drawn Θ); see :func:`private_release`.

    Example:
        >>> round(sensitivity_bound(70, 8, 5e-6, "clt"), 3)
        7.541
    """
    k = _validate.positive_int("num_projections", num_projections)
    d = _validate.positive_int("dim", dim)
    _validate.in_open_interval("failure_probability", failure_probability, 0.0, 1.0)
    _validate.one_of("method", method, SENSITIVITY_METHODS[:3])
    fp = float(failure_probability)
    if d == 1:
        t = float(k)  # ⟨θ, z⟩² = 1
    elif method == "chernoff":
        t = _chernoff_sum(k, d, fp)
    elif method == "clt":
        t = k / d + float(stats.norm.ppf(1 - fp)) / d * math.sqrt(2 * k * (d - 1) / (d + 2))
    else:
        log_inv = math.log(1 / fp)
        t = k / d + 2 / 3 * log_inv + 2 / d * math.sqrt(k * (d - 1) / (d + 2) * log_inv)
    return 2.0 * math.sqrt(min(t, float(k)))


# ---------------------------------------------------------------------------------- releases
class SlicedRelease(NamedTuple):
    """What the mechanism publishes (row order kept, for audits).

    Attributes:
        directions: Θ_t, shape (T, k, d).
        values: Θ_t yᵀ + Z_t for every private row, shape (T, k, m); rows not in release t's batch
            are not published (``mask``).
        mask: (T, m) whether row j is in release t's Poisson batch.
        noise_std: σ_t, shape (T,).
    """

    directions: Array
    values: Array
    mask: Array
    noise_std: Array


def _clip_rows(y: Array) -> Array:
    """Project every private row onto the unit ball (the sensitivity bound's domain)."""
    return project_ball(y, 1.0)


def _release_keys(key: PRNGKeyArray, t: Any) -> tuple[Array, Array, Array]:
    return tuple(jr.split(jr.fold_in(key, t), 3))


def _batch_mask(key: PRNGKeyArray, m: int, sampling_rate: float) -> Array:
    if sampling_rate >= 1:
        return jnp.ones((m,), bool)
    return jr.bernoulli(key, sampling_rate, (m,))


def _batch_width(key: PRNGKeyArray, m: int, sampling_rate: float, num_releases: int) -> int:
    """The largest Poisson batch over the releases (the masks alone are cheap); m without subsampling."""
    if sampling_rate >= 1:
        return m
    ts = jnp.arange(num_releases, dtype=jnp.int32)
    masks = jax.vmap(lambda t: _batch_mask(_release_keys(key, t)[1], m, sampling_rate))(ts)
    return max(int(jnp.max(jnp.sum(masks, axis=1))), 1)


def _release_one(key, t, y, k, noise_multiplier, sensitivity, sampling_rate, method, width):
    """Release t: fresh directions, a Poisson batch and Gaussian noise of std s·Δ_t.

    Only the batch's rows are projected: (k, width) values for rows ``idx`` (``valid`` marks the
    first count = |batch| ≤ width of them), so a release costs O(k·qm), not O(k·m).
    """
    kd, kb, kz = _release_keys(key, t)
    # Random bits are drawn in float32 for either precision, so a float64 flow post-processes the
    # same release as a float32 one (up to rounding).
    theta = ot.random_directions(kd, y.shape[1], k, dtype=jnp.float32).astype(y.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    delta_t = 2 * jnp.linalg.norm(theta, ord=2) if method == "operator" else jnp.asarray(sensitivity, y.dtype)
    std = (noise_multiplier * delta_t).astype(y.dtype)
    mask = _batch_mask(kb, y.shape[0], sampling_rate)
    if sampling_rate >= 1:
        idx = jnp.arange(y.shape[0], dtype=jnp.int32)
    else:
        idx = jnp.nonzero(mask, size=width, fill_value=0)[0].astype(jnp.int32)
    valid = jnp.arange(width, dtype=jnp.int32) < jnp.sum(mask).astype(jnp.int32)
    z = jr.normal(kz, (k, width), dtype=jnp.float32).astype(y.dtype)
    return theta, idx, valid, theta @ y[idx].T + std * z, mask, std


def private_release(
    key: PRNGKeyArray,
    data: Any,
    *,
    num_projections: int,
    noise_multiplier: Real,
    sensitivity: Real | None,
    num_releases: int = 1,
    sampling_rate: Real = 1.0,
    method: str = "chernoff",
) -> SlicedRelease:
    """The mechanism itself: ``num_releases`` noisy projections of the clipped private rows.

    This is the function :class:`DPSlicedWassersteinFlow` calls (and audits call); its parameters
    come from the flow's :attr:`~DPSlicedWassersteinFlow.mechanism`. Rows are clipped to the unit
    ball; release t uses directions, batch and noise from ``fold_in(key, t)``; σ_t = s·Δ with Δ =
    ``sensitivity`` (or 2‖Θ_t‖₂ with ``method="operator"``).
    """
    y = _clip_rows(_check_data(data))
    k = _validate.positive_int("num_projections", num_projections)
    num_releases = _validate.positive_int("num_releases", num_releases)
    _validate.positive("noise_multiplier", noise_multiplier, allow_zero=True)
    _validate.in_open_interval("sampling_rate", sampling_rate, 0.0, 1.0 + 1e-12)
    _validate.one_of("method", method, SENSITIVITY_METHODS)
    if method != "operator":
        _validate.positive("sensitivity", sensitivity)
    q, m = float(sampling_rate), y.shape[0]
    width = _batch_width(key, m, q, num_releases)

    def one(t):
        theta, idx, valid, values, mask, std = _release_one(
            key, t, y, k, float(noise_multiplier), sensitivity, q, method, width
        )
        full = jnp.zeros((k, m), y.dtype).at[:, jnp.where(valid, idx, m)].set(values, mode="drop")
        return theta, full, mask, std

    return SlicedRelease(*jax.vmap(one)(jnp.arange(num_releases, dtype=jnp.int32)))


def _check_data(data: Any) -> Array:
    y = _validate.floating_array("data", data)
    if y.ndim != 2:
        raise ValueError(f"data must have shape (m, d), got {y.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"data must hold at least one row of dimension >= 1, got shape {y.shape}")
    return _validate.finite("data", y)


# ------------------------------------------------------------------------------------ tables
def _sorted_table(values: Array, valid: Array, width: int) -> tuple[Array, Array]:
    """Sorted published values of one release, (k, width), padded with the largest; and the count."""
    count = jnp.sum(valid).astype(jnp.int32)
    s = jnp.sort(jnp.where(valid[None, :], values, jnp.inf), axis=-1)
    last = jnp.take(s, jnp.maximum(count - 1, 0), axis=1)[:, None]
    j = jnp.arange(width, dtype=jnp.int32)[None, :]
    return jnp.where(j < count, s, jnp.where(count > 0, last, 0.0)), count


def _percentile_table(table: Array, count: Array, num_quantiles: int) -> Array:
    """Quantiles of the first ``count`` sorted entries at P equally spaced levels (linear, as jnp.quantile)."""
    perc = jnp.linspace(0.0, 1.0, num_quantiles, dtype=table.dtype)
    pos = perc * jnp.maximum(count - 1, 0).astype(table.dtype)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(count - 1, 0))
    frac = pos - lo.astype(table.dtype)
    return table[:, lo] * (1 - frac)[None, :] + table[:, hi] * frac[None, :]


@ft.partial(jax.jit, static_argnames=("k", "sampling_rate", "method", "width", "num_quantiles"))
def _build_tables(key, y, noise_multiplier, sensitivity, *, k, sampling_rate, method, width, num_quantiles, ts):
    def one(t):
        theta, _, valid, values, _, std = _release_one(
            key, t, y, k, noise_multiplier, sensitivity, sampling_rate, method, width
        )
        table, count = _sorted_table(values, valid, width)
        if num_quantiles is not None:
            table = _percentile_table(table, count, num_quantiles)
        return theta, table, count, std

    return jax.lax.map(one, ts)


# -------------------------------------------------------------------------------------- drift
@ft.partial(jax.jit, static_argnames="percentiles")  # one program, so eager (notebook) steps compile once
def _drift(x, w, directions, table, count, noise, percentiles):
    u = directions @ x.T + noise  # (L, n): sorting along the last axis is fastest on XLA:CPU
    q = _transport_percentiles(u, table) if percentiles else _transport_exact(u, w, table, count)
    r = u - q
    drift = (r.T @ directions) / directions.shape[0]
    return drift, jnp.mean(r**2, axis=0) @ w


def _transport_exact(u: Array, w: Array, table: Array, count: Array) -> Array:
    """q_il = Q_l(F_l(u_il)): weighted mid-rank levels of u against the table's (j + ½)/count grid."""
    perm = jnp.argsort(u, axis=-1)
    ws = w[perm]
    levels = jnp.cumsum(ws, axis=-1) - 0.5 * ws
    q_sorted = _interp_uniform(levels, table, count)
    return jax.vmap(lambda p, q: jnp.zeros_like(q).at[p].set(q))(perm, q_sorted)


def _interp_uniform(levels: Array, table: Array, count: Array) -> Array:
    """Row-wise ``jnp.interp(levels, (j + ½)/count, table)`` by arithmetic on the uniform grid.

    The grid is uniform, so the bracketing index is ⌊level·count − ½⌋ (clamped, as interp clamps):
    two gathers per level instead of a binary search (which is ~50x slower on XLA:CPU here).
    """
    c = jnp.maximum(count, 1).astype(levels.dtype)
    pos = jnp.clip(levels * c - 0.5, 0.0, c - 1)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(count, 1).astype(jnp.int32) - 1)
    frac = pos - lo.astype(levels.dtype)
    take = jax.vmap(jnp.take)
    return take(table, lo) * (1 - frac) + take(table, hi) * frac


def _transport_percentiles(u: Array, table: Array) -> Array:
    """The official code's map: F from the particles' own P-percentile table, Q from the release's."""
    num = table.shape[-1]
    perc = jnp.linspace(0.0, 1.0, num, dtype=u.dtype)
    qu = jnp.quantile(u, perc, axis=-1).T  # (L, P)
    cdf = jnp.clip(jax.vmap(jnp.interp, in_axes=(0, 0, None))(u, qu, perc), 0.0, 1.0)
    return jax.vmap(jnp.interp, in_axes=(0, None, 0))(cdf, perc, table)


def sliced_drift(
    x: Float[Array, "n d"],
    w: Float[Array, " n"],
    directions: Float[Array, "L d"],
    table: Float[Array, "L B"],
    count: Any,
    noise: Float[Array, "L n"],
    *,
    percentiles: bool = False,
) -> tuple[Float[Array, "n d"], Float[Array, ""]]:
    """g_i = (1/L) Σ_l (u_il − q_il) θ_l with u = Θx + noise, and the sliced W₂² estimate Σ_i w_i mean_l (u − q)².

    ``table`` holds the target's sorted values (first ``count`` valid) or, with ``percentiles``, its
    quantiles at P equally spaced levels. With zero noise and exact tables, g is the
    sliced-Wasserstein flow's drift (Liutkus et al. 2019) for the target's empirical projections.
    """
    return _drift(x, w, directions, table, count, noise, percentiles)


# --------------------------------------------------------------------------------------- flow
class _Mechanism(NamedTuple):
    """The release's parameters.

    In a flow the numbers are 0-d NumPy arrays (pytree leaves, so flows at different ε share compiled
    code and can be stacked into a sweep); ``plain()`` gives Python values.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    sensitivity: float | None
    method: str
    sensitivity_failure: float
    num_releases: int
    sampling_rate: float
    num_projections: int
    epsilon_pld: float
    epsilon_rdp: float
    classical_noise_multiplier: float | None
    num_records: int
    dim: int

    def plain(self) -> _Mechanism:
        """The same with Python numbers (JSON-able)."""
        return _Mechanism(*(v.item() if isinstance(v, np.ndarray) else v for v in self))

    def as_leaves(self) -> _Mechanism:
        """The same with 0-d NumPy arrays in place of numbers."""
        return _Mechanism(
            *(np.asarray(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in self)
        )

    def release_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`private_release` that reproduce the flow's release."""
        m = self.plain()
        return {
            "num_projections": m.num_projections,
            "noise_multiplier": m.noise_multiplier,
            "sensitivity": m.sensitivity,
            "num_releases": m.num_releases,
            "sampling_rate": m.sampling_rate,
            "method": m.method,
        }


def _accounted_releases(resample: bool, num_steps: int) -> int:
    """How many releases the accountant composes (one per step when resampling)."""
    return num_steps if resample else 1


def _calibrate(epsilon: float, delta: float, releases: int, sampling_rate: float) -> float:
    """Noise multiplier s = σ/Δ meeting (ε, δ) for ``releases`` (subsampled) Gaussian releases.

    One full-batch release: the analytic Gaussian mechanism (exact). Otherwise dp-accounting's PLD
    (on a 1e-3 loss grid; pessimistic discretisation keeps it an upper bound) by bisection to a
    relative 1e-3, inside the bracket [s_RDP/2, s_RDP] that the (fast, looser)
    RDP calibration gives; the returned s is the bracket's upper end, so its PLD ε ≤ ε.
    """
    if releases == 1 and sampling_rate >= 1:
        return calibrate_gaussian(epsilon, delta, 1.0)  # analytic Gaussian mechanism (exact)
    q = None if sampling_rate >= 1 else sampling_rate
    if q is None:  # T full-batch Gaussians are one Gaussian with s/√T (exact)
        return calibrate_gaussian(epsilon, delta, 1.0) * math.sqrt(releases)
    hi = calibrate_noise_multiplier(epsilon, delta, releases, q, accountant="rdp", tol=1e-4)
    lo = hi / 2

    def eps(s: float) -> float:  # a coarser (still pessimistic, so still valid) PLD grid: 10x faster
        return _pld_epsilon(s, releases, q, delta, max(1e-3, 2e-4 * epsilon))

    while eps(lo) <= epsilon and lo > 1e-6:  # PLD is never looser than RDP; widen if ever needed
        lo, hi = lo / 2, lo
    while hi / lo - 1 > 1e-3:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if eps(mid) > epsilon else (lo, mid)
    return hi


def _pld_epsilon(s: float, releases: int, q: float, delta: float, interval: float) -> float:
    """ε of ``releases`` Poisson-subsampled Gaussians by dp-accounting's PLD (pessimistic grid of ``interval``)."""
    pld = pld_lib.from_gaussian_mechanism(s, sampling_prob=q, value_discretization_interval=interval)
    return float(pld.self_compose(releases).get_epsilon_for_delta(delta))


def _ledger(noise_multiplier: float, releases: int, sampling_rate: float) -> PrivacyLedger:
    return PrivacyLedger().add_gaussian(noise_multiplier, releases, None if sampling_rate >= 1 else sampling_rate)


class DPSlicedWassersteinFlow(AbstractFlow):
    """The (ε, δ)-DP sliced-Wasserstein flow toward private data (DPSWflow / DPSWflow-r, METHODS.md §4).

    Constructing it spends the privacy budget: the private ``data`` is clipped to the unit ball,
    released as noisy random projections and dropped; the flow keeps only the release (sorted, per
    direction). See the module docstring for the mechanism and the accounting.

    Args:
        data: (m, d) private rows; rows outside the unit ball are projected onto it (a warning says
            so). For images, pass unit-norm autoencoder codes.
        epsilon: target ε > 0, or ``math.inf`` for the non-private flow (no noise).
        delta: target δ ∈ (0, 1); with ``sensitivity`` ≠ "operator" half of it pays for the
            sensitivity bound's failure probability.
        num_projections: k directions per release.
        step_size: τ > 0 (the paper's dt = 3 for d = 8 latents).
        num_steps: T; with ``resample=True`` the number of releases (one per step).
        resample: fresh directions and a Poisson batch every step (DPSWflow-r).
        batch_size: expected Poisson batch size B (rate q = B/m); only with ``resample``.
        entropy: λ ≥ 0, the Brownian term √(2λτ) ε.
        num_quantiles: None (exact sort-based 1-D maps) or P ≥ 2 (the official P-percentile tables).
        num_subprojections: L directions drawn (with replacement) from the k each step; None uses all.
        sensitivity: one of :data:`SENSITIVITY_METHODS`.
        smooth_particles: add N(0, σ_t²) to the particle projections too (the paper's smoothing).
        key: the release key; default :func:`dpflows.privacy.release_key` (OS entropy). Never reuse
            or publish the key of a real release.
    """

    directions: Float[Array, "T k d"]
    tables: Float[Array, "T k B"]
    counts: Array
    noise_std: Float[Array, " T"]
    step_size: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    entropy: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    num_steps: int = eqx.field(static=True)
    resample: bool = eqx.field(static=True)
    num_quantiles: int | None = eqx.field(static=True)
    num_subprojections: int | None = eqx.field(static=True)
    smooth_particles: bool = eqx.field(static=True)
    mechanism: _Mechanism

    def __init__(
        self,
        data: Any,
        *,
        epsilon: Real,
        delta: Real,
        num_projections: int,
        step_size: Any,
        num_steps: int,
        resample: bool = False,
        batch_size: int | None = None,
        entropy: Any = 0.0,
        num_quantiles: int | None = None,
        num_subprojections: int | None = None,
        sensitivity: str = "chernoff",
        smooth_particles: bool = True,
        key: PRNGKeyArray | None = None,
    ):
        """Validate, calibrate the noise, draw the release(s) and keep their sorted tables."""
        y = _check_data(data)
        m, d = y.shape
        k = _validate.positive_int("num_projections", num_projections)
        num_steps = _validate.positive_int("num_steps", num_steps)
        if not isinstance(resample, bool):
            raise TypeError(f"resample must be a bool, got {resample!r}")
        try:
            eps = float(epsilon)
        except (TypeError, ValueError) as err:
            raise TypeError(f"epsilon must be a number, got {epsilon!r}") from err
        if math.isnan(eps) or eps <= 0:
            raise ValueError(f"epsilon must be > 0 (math.inf for the non-private flow), got {epsilon}")
        _validate.in_open_interval("delta", delta, 0.0, 1.0)
        _validate.positive("step_size", step_size)
        _validate.positive("entropy", entropy, allow_zero=True)
        _validate.one_of("sensitivity", sensitivity, SENSITIVITY_METHODS)
        if num_quantiles is not None and _validate.positive_int("num_quantiles", num_quantiles) < 2:
            raise ValueError(f"num_quantiles must be None or >= 2, got {num_quantiles}")
        if num_subprojections is not None:
            _validate.positive_int("num_subprojections", num_subprojections)
        if batch_size is not None:
            if not resample:
                raise ValueError("batch_size is only used with resample=True (DPSWflow-r draws a batch per step)")
            if _validate.positive_int("batch_size", batch_size) > m:
                raise ValueError(f"batch_size must be <= the number of private rows {m}, got {batch_size}")
        norms = np.linalg.norm(np.asarray(y, np.float64), axis=1)
        if np.any(norms > 1 + 1e-6):
            warnings.warn(
                f"{int(np.sum(norms > 1 + 1e-6))} of {m} private rows have norm > 1 and are projected onto the "
                "unit ball (the sensitivity bound needs ||y|| <= 1); rescale the data to avoid distortion",
                stacklevel=2,
            )
        q = 1.0 if batch_size is None else batch_size / m
        mech = _mechanism(eps, float(delta), k, d, m, resample, num_steps, q, sensitivity)
        key = release_key() if key is None else key
        releases = mech.num_releases
        ts = jnp.arange(releases, dtype=jnp.int32)
        width = _batch_width(key, m, q, releases)  # the widest batch fixes the table width
        sens = 0.0 if mech.sensitivity is None else mech.sensitivity
        theta, tables, counts, std = _build_tables(
            key,
            _clip_rows(y),
            mech.noise_multiplier,
            sens,
            k=k,
            sampling_rate=q,
            method=sensitivity,
            width=width,
            num_quantiles=num_quantiles,
            ts=ts,
        )
        self.directions, self.tables, self.counts, self.noise_std = theta, tables, counts, std
        self.step_size = jnp.asarray(step_size, y.dtype)
        self.entropy = jnp.asarray(entropy, y.dtype)
        self.num_steps, self.resample = num_steps, resample
        self.num_quantiles, self.num_subprojections = num_quantiles, num_subprojections
        self.smooth_particles = bool(smooth_particles)
        self.mechanism = mech.as_leaves()

    # -------------------------------------------------------------------------------- privacy
    @property
    def certificate(self) -> PrivacyCertificate:
        """The (ε, δ) guarantee of the release, which covers the flow and everything computed from it."""
        mech = self.mechanism.plain()
        if math.isinf(mech.epsilon):
            return PrivacyCertificate(math.inf, 1.0, "sliced projections without noise", "none", notes="epsilon=inf")
        q, t = mech.sampling_rate, mech.num_releases
        sens = "Δ_t = 2‖Θ_t‖₂ (drawn directions; no failure probability)"
        if mech.method != "operator":
            sens = (
                f"Δ = {mech.sensitivity:.6g} ({mech.method} bound on ‖Θᵀ(y−y')‖, ‖y‖ ≤ 1, failure probability "
                f"{mech.sensitivity_failure:.3g} per release, {t * mech.sensitivity_failure:.3g} in all, charged to δ)"
            )
        acc = "analytic Gaussian mechanism (Balle & Wang 2018)"
        if t > 1 or q < 1:
            acc = (
                f"dp-accounting PLD over {t} Poisson-subsampled (q={q:.4g}) Gaussian releases; "
                f"RDP gives ε={mech.epsilon_rdp:.4g}"
            )
        classical = ""
        if mech.classical_noise_multiplier is not None:
            classical = f" The classical σ/Δ = √(2 ln(1.25/δ'))/ε would be {mech.classical_noise_multiplier:.4g}."
        notes = (
            f"Release Θ_t Yᵀ + N(0, σ_t²) of {mech.num_records} rows clipped to the unit ball (d={mech.dim}), "
            f"k={mech.num_projections} directions per release, {t} release(s). {sens}. Noise multiplier s = σ_t/Δ_t = "
            f"{mech.noise_multiplier:.6g} from the {acc}; PLD ε = {mech.epsilon_pld:.6g}.{classical} Every flow step "
            "and run is post-processing of the release, drawn once at construction. Replace-one neighbours."
        )
        import dp_accounting as dpa

        event = dpa.GaussianDpEvent(mech.noise_multiplier)
        if q < 1:
            event = dpa.PoissonSampledDpEvent(q, event)
        if t > 1:
            event = dpa.SelfComposedDpEvent(event, t)
        return PrivacyCertificate(
            epsilon=mech.epsilon,
            delta=mech.delta,
            mechanism=(
                f"sliced Gaussian release (k={mech.num_projections}, s={mech.noise_multiplier:.4g}, T={t}, q={q:.4g})"
            ),
            covers="mechanism",
            notes=notes,
            event=event,
            parameters=mech._asdict(),
        )

    @property
    def ledger(self) -> PrivacyLedger:
        """The releases as a :class:`~dpflows.privacy.PrivacyLedger` (to compose with other work)."""
        mech = self.mechanism.plain()
        if math.isinf(mech.epsilon):
            return PrivacyLedger().add_gaussian(0.0, 1)
        return _ledger(mech.noise_multiplier, mech.num_releases, mech.sampling_rate)

    # ----------------------------------------------------------------------------------- flow
    def init(self, x: Any, logw: Any = None) -> Particles:
        """Particles at ``x`` (m, d) with a release counter in ``aux``."""
        x = _validate.floating_array("x", x)
        d = self.directions.shape[-1]
        if x.ndim != 2 or x.shape[1] != d or x.shape[0] == 0:
            raise ValueError(f"x must have shape (n, {d}) with n >= 1 to match the data, got {x.shape}")
        return Particles.create(_validate.finite("x", x), logw, aux={"release": jnp.zeros((), jnp.int32)})

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One step with release ``aux["release"] mod T`` (see the module docstring)."""
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
    x, dtype = state.x, state.x.dtype
    counter = jnp.zeros((), jnp.int32) if state.aux is None else state.aux["release"]
    r = counter % flow.directions.shape[0]
    theta, table = flow.directions[r].astype(dtype), flow.tables[r].astype(dtype)
    k_sub, k_smooth, k_brown = jr.split(key, 3)
    if flow.num_subprojections is not None:
        idx = jr.randint(k_sub, (flow.num_subprojections,), 0, theta.shape[0])
        theta, table = theta[idx], table[idx]
    std = flow.noise_std[r].astype(dtype) if flow.smooth_particles else jnp.zeros((), dtype)
    noise = std * jr.normal(k_smooth, (theta.shape[0], x.shape[0]), dtype=dtype)
    w = jnp.exp(state.logw - logsumexp(state.logw)).astype(dtype)
    drift, sw2 = _drift(x, w, theta, table, flow.counts[r], noise, flow.num_quantiles is not None)
    drift = jnp.where(flow.counts[r] > 0, drift, 0.0)  # an empty Poisson batch gives no target
    tau, lam = flow.step_size.astype(dtype), flow.entropy.astype(dtype)
    x_new = x - tau * drift + jnp.sqrt(2 * lam * tau) * jr.normal(k_brown, x.shape, dtype=dtype)
    new = eqx.tree_at(
        lambda s: (s.x, s.t, s.aux), state, (x_new, state.t + tau, {"release": counter + 1}), is_leaf=_is_none
    )
    info = {"sliced_w2": sw2, "drift_norm": jnp.sqrt(jnp.mean(jnp.sum(drift**2, axis=1))), "release": r}
    return new, info


def _is_none(x: Any) -> bool:
    return x is None


@ft.lru_cache(maxsize=64)  # calibration is pure and the PLD part takes seconds
def _mechanism(
    eps: float, delta: float, k: int, d: int, m: int, resample: bool, num_steps: int, q: float, method: str
) -> _Mechanism:
    releases = num_steps if resample else 1
    accounted = _accounted_releases(resample, num_steps)
    if math.isinf(eps):
        return _Mechanism(eps, delta, 0.0, None, method, 0.0, releases, q, k, math.inf, math.inf, None, m, d)
    if method == "operator":
        failure, delta_mech, sens = 0.0, delta, None
    else:
        failure = delta / (2 * releases)  # union over the releases' independent directions
        delta_mech = delta / 2
        sens = sensitivity_bound(k, d, failure, method)
    s = _calibrate(eps, delta_mech, accounted, q)
    if q >= 1:  # T full-batch Gaussians are one with s/√T: exact
        eps_pld = gaussian_epsilon(s / math.sqrt(accounted), delta_mech, 1.0)
    else:  # the loss grid grows with ε; keep it near 1e4 points wide
        eps_pld = _pld_epsilon(s, accounted, q, delta_mech, max(1e-4, 2e-5 * eps))
    classical = math.sqrt(2 * math.log(1.25 / delta_mech)) / eps if accounted == 1 and q >= 1 else None
    return _Mechanism(
        eps,
        delta,
        s,
        sens,
        method,
        failure,
        releases,
        q,
        k,
        eps_pld,
        _ledger(s, accounted, q).epsilon(delta_mech, "rdp"),
        classical,
        m,
        d,
    )


# ---------------------------------------------------------------------------------- DPSWgen
class GeneratorResult(NamedTuple):
    """What :func:`train_sliced_generator` returns: the generator, its optimiser state and the losses."""

    generator: Any
    opt_state: Any
    loss: Array


@eqx.filter_jit
def _gen_chunk(params, static, opt_state, flow, steps, key, optimizer, batch_size, latent_dim):
    def one(carry, t):
        params, opt_state = carry
        kz, kn = jr.split(jr.fold_in(key, t))
        r = t % flow.directions.shape[0]
        theta, table, count, std = flow.directions[r], flow.tables[r], flow.counts[r], flow.noise_std[r]
        dtype = table.dtype
        std = std if flow.smooth_particles else jnp.zeros((), dtype)
        z = jr.normal(kz, (batch_size, latent_dim), dtype=dtype)
        noise = std * jr.normal(kn, (theta.shape[0], batch_size), dtype=dtype)
        w = jnp.full((batch_size,), 1.0 / batch_size, dtype)

        def loss_fn(p):
            x = jax.vmap(eqx.combine(p, static))(z).astype(dtype)
            u = theta @ x.T + noise
            q = jax.lax.stop_gradient(
                _transport_percentiles(u, table) if flow.num_quantiles else _transport_exact(u, w, table, count)
            )
            return jnp.mean((u - q) ** 2)  # = mean_l W₂²(θ_l#G, release_l) at the sorted pairing

        loss, grads = eqx.filter_value_and_grad(loss_fn)(params)
        grads = jax.tree_util.tree_map(lambda g: jnp.where(count > 0, g, 0.0), grads)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts with floats
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), steps)
    return params, opt_state, losses


def train_sliced_generator(
    generator: Any,
    flow: DPSlicedWassersteinFlow,
    *,
    key: PRNGKeyArray,
    num_steps: int,
    batch_size: int = 250,
    learning_rate: float = 1e-3,
    latent_dim: int | None = None,
    progress: bool = False,
    chunk_size: int = 500,
) -> GeneratorResult:
    """DPSWgen (METHODS.md §4c): fit G(z), z ~ N(0, I), to a flow's release by the DP sliced loss.

    Step t draws ``batch_size`` samples, projects them on release t's directions with the same
    smoothing noise σ_t, and takes an Adam step on mean_l W₂²(θ_l#G + N_σ, release_l) (gradient
    through the sorted pairing). It reads only the release, so it carries ``flow.certificate``
    unchanged: build the flow with ``resample=True`` for the paper's per-step batches.
    """
    if not isinstance(flow, DPSlicedWassersteinFlow):
        raise TypeError(f"flow must be a DPSlicedWassersteinFlow, got {type(flow).__name__}")
    num_steps = _validate.positive_int("num_steps", num_steps)
    batch_size = _validate.positive_int("batch_size", batch_size)
    _validate.positive("learning_rate", learning_rate)
    chunk_size = _validate.positive_int("chunk_size", chunk_size)
    latent_dim = latent_dim or getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise ValueError("latent_dim must be given for a generator without a latent_dim attribute")
    optimizer = optax.adam(learning_rate)
    params, static = eqx.partition(generator, eqx.is_inexact_array)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="train_sliced_generator")
    losses = []
    for start in range(0, num_steps, chunk_size):
        steps = jnp.arange(start, min(start + chunk_size, num_steps), dtype=jnp.int32)
        params, opt_state, loss = _gen_chunk(
            params, static, opt_state, flow, steps, key, optimizer, batch_size, int(latent_dim)
        )
        losses.append(loss)
        if bar is not None:
            bar.update(steps.shape[0])
            bar.set_postfix(loss=f"{float(loss[-1]):.4g}")
    if bar is not None:
        bar.close()
    return GeneratorResult(eqx.combine(params, static), opt_state, jnp.concatenate(losses))
