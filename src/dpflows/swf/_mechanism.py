"""The DP-SW mechanism: the only code in dpflows.swf that sees private rows (METHODS.md §4b, §4c).

:func:`private_release` clips the rows, draws directions, Poisson batches and Gaussian noise,
calibrates the noise through :mod:`dpflows.privacy`, and returns a :class:`SlicedRelease` (what the
flow and the generator need: directions, sorted noisy tables, counts, σ per release, and the privacy
numbers as array leaves) with its certificate. :func:`sliced_gaussian_mechanism` is the same draw in
row order (every published value with its row), for audits.
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

from .. import _validate, ot, privacy
from .._typing import Array, Float, Int, PRNGKeyArray, Real
from ..privacy import PrivacyCertificate, PrivacyLedger
from ..privacy.mechanisms import project_ball
from ._sensitivity import SENSITIVITY_METHODS, sensitivity_bound

__all__ = ["NoisyProjections", "SlicedRelease", "private_release", "sliced_gaussian_mechanism"]


# ----------------------------------------------------------------------------------- the draw
def _clip_rows(y: Array) -> Array:
    """Project every private row onto the unit ball (the sensitivity bound's domain)."""
    return project_ball(y, 1.0)


def _check_data(data: Any) -> Array:
    y = _validate.floating_array("data", data)
    if y.ndim != 2:
        raise ValueError(f"data must have shape (m, d), got {y.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"data must hold at least one row of dimension >= 1, got shape {y.shape}")
    return _validate.finite("data", y)


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


class NoisyProjections(NamedTuple):
    """What the mechanism publishes, in row order (for audits).

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


def sliced_gaussian_mechanism(
    key: PRNGKeyArray,
    data: Any,
    *,
    num_projections: int,
    noise_multiplier: Real,
    sensitivity: Real | None,
    num_releases: int = 1,
    sampling_rate: Real = 1.0,
    method: str = "chernoff",
) -> NoisyProjections:
    """The raw mechanism for a given noise multiplier: ``num_releases`` noisy projections of the clipped rows.

    Rows are clipped to the unit ball; release t uses directions, batch and noise from
    ``fold_in(key, t)``; σ_t = s·Δ with Δ = ``sensitivity`` (or 2‖Θ_t‖₂ with ``method="operator"``).
    :func:`private_release` draws exactly these values (same key) and keeps them sorted per
    direction; :meth:`SlicedRelease.mechanism_kwargs` gives the arguments that reproduce a release.
    No calibration here: the caller's ``noise_multiplier`` is used as is.
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

    return NoisyProjections(*jax.vmap(one)(jnp.arange(num_releases, dtype=jnp.int32)))


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


# ------------------------------------------------------------------------------- calibration
_PRIVACY_FIELDS = (
    "epsilon",
    "delta",
    "noise_multiplier",
    "sensitivity",
    "sensitivity_failure",
    "sampling_rate",
    "epsilon_pld",
    "epsilon_rdp",
    "classical_noise_multiplier",
    "num_records",
)


def _calibration(eps: float, delta: float, k: int, d: int, m: int, releases: int, q: float, method: str) -> dict:
    """The release's privacy numbers, all from :mod:`dpflows.privacy`'s public calibration/accounting.

    With a sensitivity bound that can fail (every method but "operator"), δ/2 pays for the bound's
    failure (split over the releases' independent directions by a union bound) and δ/2 for the
    mechanism; "operator" gives all of δ to the mechanism.
    """
    nan = math.nan
    if math.isinf(eps):
        return dict(
            epsilon=eps, delta=delta, noise_multiplier=0.0, sensitivity=nan, sensitivity_failure=0.0,
            sampling_rate=q, epsilon_pld=math.inf, epsilon_rdp=math.inf, classical_noise_multiplier=nan,
            num_records=m,
        )  # fmt: skip
    if method == "operator":
        failure, delta_mech, sens = 0.0, delta, nan
    else:
        failure = delta / (2 * releases)  # union over the releases' independent directions
        delta_mech = delta / 2
        sens = sensitivity_bound(k, d, failure, method)
    # Looked up on the package at call time: audits plant bugs by patching these public names.
    s = privacy.calibrate_subsampled_gaussian(eps, delta_mech, releases, q)
    # The PLD loss grid grows with ε; keep it near 1e4 points wide.
    eps_pld = privacy.subsampled_gaussian_epsilon(
        s, delta_mech, releases, q, value_discretization_interval=max(1e-4, 2e-5 * eps)
    )
    eps_rdp = privacy.subsampled_gaussian_epsilon(s, delta_mech, releases, q, accountant="rdp")
    classical = privacy.classical_gaussian_multiplier(eps, delta_mech) if releases == 1 and q >= 1 else nan
    return dict(
        epsilon=eps, delta=delta, noise_multiplier=s, sensitivity=sens, sensitivity_failure=failure,
        sampling_rate=q, epsilon_pld=eps_pld, epsilon_rdp=eps_rdp, classical_noise_multiplier=classical,
        num_records=m,
    )  # fmt: skip


# --------------------------------------------------------------------------------- the release
def _leaf(value: Any) -> np.ndarray:
    """A 0-d NumPy leaf: float64 keeps the privacy numbers exact (host-side) until a sweep stacks them."""
    return np.asarray(value, np.int64 if isinstance(value, int) else np.float64)


def _round_up(value: np.ndarray) -> float:
    """A privacy number stored below float64 (a stacked or jitted release) rounded up to the next value.

    Rounding to the nearest float32 can understate ε or δ by half an ulp; one ulp up never does.
    """
    if value.dtype == np.float64 or not np.isfinite(value):
        return float(value)
    return float(np.nextafter(value, np.asarray(np.inf, value.dtype)))


class SlicedRelease(eqx.Module):
    """What :func:`private_release` publishes: everything the flow and DPSWgen read, never the data.

    Every number is a pytree leaf, so releases at different ε (or keys) stack into one sweep: the
    arrays gain a leading member axis and :attr:`certificate` then gives one certificate per member.

    Attributes:
        directions: Θ_t, (T, k, d) uniform unit rows.
        tables: per release and direction, the sorted noisy projections of the batch's rows (T, k, B),
            the first ``counts[t]`` valid (padded with the largest), or P percentiles of them.
        counts: (T,) batch sizes |B_t|.
        noise_std: (T,) σ_t = s·Δ_t.
        epsilon, delta: the target (ε, δ) (ε = inf: no noise, no guarantee).
        noise_multiplier: s = σ_t/Δ_t from the calibration.
        sensitivity: Δ (NaN with ``method="operator"``, where Δ_t = 2‖Θ_t‖₂ varies per release).
        sensitivity_failure: the bound's failure probability per release (charged to δ).
        sampling_rate: Poisson rate q of each release's batch.
        epsilon_pld, epsilon_rdp: ε of the composed releases at the mechanism's δ by PLD and RDP.
        classical_noise_multiplier: √(2 ln(1.25/δ'))/ε for one full-batch release (else NaN), for comparison.
        num_records: m, the number of private rows.
        num_quantiles: None (exact sorted tables) or P (percentile tables); static.
        method: the sensitivity method (one of ``SENSITIVITY_METHODS``); static.

    The privacy numbers are 0-d NumPy float64 arrays as built (exact); a stacked release holds them
    in the stack's precision, and its certificates round ε and δ *up* to the next representable value.
    """

    directions: Float[Array, "*batch T k d"]
    tables: Float[Array, "*batch T k B"]
    counts: Int[Array, "*batch T"]
    noise_std: Float[Array, "*batch T"]
    epsilon: Any
    delta: Any
    noise_multiplier: Any
    sensitivity: Any
    sensitivity_failure: Any
    sampling_rate: Any
    epsilon_pld: Any
    epsilon_rdp: Any
    classical_noise_multiplier: Any
    num_records: Any
    num_quantiles: int | None = eqx.field(static=True)
    method: str = eqx.field(static=True)

    @property
    def num_releases(self) -> int:
        """T, the number of releases (a step uses release t mod T)."""
        return self.directions.shape[-3]

    @property
    def num_projections(self) -> int:
        """k, the directions per release."""
        return self.directions.shape[-2]

    @property
    def dim(self) -> int:
        """d, the dimension of the data (and particles)."""
        return self.directions.shape[-1]

    @property
    def num_members(self) -> int | None:
        """The member count of a stacked release (None for a single one)."""
        sizes = {np.shape(getattr(self, f))[0] for f in _PRIVACY_FIELDS if np.ndim(getattr(self, f)) == 1}
        if self.directions.ndim == 4:
            sizes.add(self.directions.shape[0])
        if len(sizes) > 1:
            raise ValueError(f"a stacked release's leaves disagree on the member count: {sorted(sizes)}")
        return sizes.pop() if sizes else None

    def parameters(self, member: int | None = None) -> dict[str, Any]:
        """The privacy numbers and sizes as Python values (JSON-able); ``member`` selects one of a stack."""
        size = self.num_members
        if size is not None and member is None:
            raise ValueError(f"this release stacks {size} members; pass member=0..{size - 1}")
        if size is None and member is not None:
            raise ValueError(f"member must be None for a single release, got {member!r}")
        out: dict[str, Any] = {}
        for f in _PRIVACY_FIELDS:
            v = np.asarray(getattr(self, f))
            v = np.asarray(v[member]) if v.ndim == 1 else v
            out[f] = _round_up(v) if f in ("epsilon", "delta") else v.item()
        out["num_records"] = int(out["num_records"])
        out["sensitivity"] = None if math.isnan(out["sensitivity"]) else out["sensitivity"]
        cl = out["classical_noise_multiplier"]
        out["classical_noise_multiplier"] = None if math.isnan(cl) else cl
        out.update(
            method=self.method,
            num_releases=self.num_releases,
            num_projections=self.num_projections,
            dim=self.dim,
            num_quantiles=self.num_quantiles,
        )
        return out

    def mechanism_kwargs(self, member: int | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`sliced_gaussian_mechanism` that redraw this release (same key)."""
        p = self.parameters(member)
        return {
            "num_projections": p["num_projections"],
            "noise_multiplier": p["noise_multiplier"],
            "sensitivity": p["sensitivity"],
            "num_releases": p["num_releases"],
            "sampling_rate": p["sampling_rate"],
            "method": p["method"],
        }

    def pad_tables(self, width: int) -> SlicedRelease:
        """The same release with its exact tables widened to ``width`` columns (post-processing).

        Each row repeats its last entry (the largest valid value, as the mechanism already pads), so
        the flow and the loss are unchanged; releases whose largest Poisson batches differ can then be
        stacked into one sweep. Percentile tables (``num_quantiles``) already share their width.
        """
        b = self.tables.shape[-1]
        width = _validate.positive_int("width", width)
        if self.num_quantiles is not None or width == b:
            return self
        if width < b:
            raise ValueError(f"width must be >= the tables' width {b}, got {width}")
        pad = jnp.repeat(self.tables[..., -1:], width - b, axis=-1)
        return eqx.tree_at(lambda r: r.tables, self, jnp.concatenate([self.tables, pad], axis=-1))

    @property
    def certificate(self) -> PrivacyCertificate | tuple[PrivacyCertificate, ...]:
        """The (ε, δ) guarantee of the release (``covers="mechanism"``), which covers everything computed from it.

        A stacked release gives a tuple with one certificate per member, in stack order.
        """
        size = self.num_members
        if size is None:
            return _certificate(self.parameters())
        return tuple(_certificate(self.parameters(i)) for i in range(size))

    @property
    def ledger(self) -> PrivacyLedger:
        """The releases as a :class:`~dpflows.privacy.PrivacyLedger` (to compose with other work)."""
        p = self.parameters()
        if math.isinf(p["epsilon"]):
            return PrivacyLedger().add_gaussian(0.0, 1)
        return PrivacyLedger().add_certificate(_certificate(p))  # the noise events and the bound's failure


def _certificate(p: dict[str, Any]) -> PrivacyCertificate:
    if math.isinf(p["epsilon"]):
        return PrivacyCertificate(math.inf, 1.0, "sliced projections without noise", "none", notes="epsilon=inf")
    q, t = p["sampling_rate"], p["num_releases"]
    sens = "Δ_t = 2‖Θ_t‖₂ (drawn directions; no failure probability)"
    if p["method"] != "operator":
        sens = (
            f"Δ = {p['sensitivity']:.6g} ({p['method']} bound on ‖Θᵀ(y−y')‖, ‖y‖ ≤ 1, failure probability "
            f"{p['sensitivity_failure']:.3g} per release, {t * p['sensitivity_failure']:.3g} in all, charged to δ)"
        )
    acc = "analytic Gaussian mechanism (Balle & Wang 2018)"
    if t > 1 or q < 1:
        acc = (
            f"dp-accounting PLD over {t} Poisson-subsampled (q={q:.4g}) Gaussian releases; "
            f"RDP gives ε={p['epsilon_rdp']:.4g}"
        )
    classical = ""
    if p["classical_noise_multiplier"] is not None:
        classical = f" The classical σ/Δ = √(2 ln(1.25/δ'))/ε would be {p['classical_noise_multiplier']:.4g}."
    notes = (
        f"Release Θ_t Yᵀ + N(0, σ_t²) of {p['num_records']} rows clipped to the unit ball (d={p['dim']}), "
        f"k={p['num_projections']} directions per release, {t} release(s). {sens}. Noise multiplier s = σ_t/Δ_t = "
        f"{p['noise_multiplier']:.6g} from the {acc}; PLD ε = {p['epsilon_pld']:.6g}.{classical} Every flow step, "
        "run, sweep and generator fitted to the release is post-processing of it (drawn once by private_release). "
        "Replace-one neighbours."
    )
    return PrivacyCertificate(
        epsilon=p["epsilon"],
        delta=p["delta"],
        mechanism=(
            f"sliced Gaussian release (k={p['num_projections']}, s={p['noise_multiplier']:.4g}, T={t}, q={q:.4g})"
        ),
        covers="mechanism",
        notes=notes,
        event=privacy.subsampled_gaussian_event(p["noise_multiplier"], t, q),
        parameters=p,
        event_failure=t * p["sensitivity_failure"],
    )


def _check_epsilon(epsilon: Any) -> float:
    try:
        eps = float(epsilon)
    except (TypeError, ValueError) as err:
        raise TypeError(f"epsilon must be a number, got {epsilon!r}") from err
    if math.isnan(eps) or eps <= 0:
        raise ValueError(f"epsilon must be > 0 (math.inf for the non-private flow), got {epsilon}")
    return eps


def _warn_unclipped(y: Array) -> None:
    norms = np.linalg.norm(np.asarray(y, np.float64), axis=1)
    if np.any(norms > 1 + 1e-6):
        warnings.warn(
            f"{int(np.sum(norms > 1 + 1e-6))} of {y.shape[0]} private rows have norm > 1 and are projected onto the "
            "unit ball (the sensitivity bound needs ||y|| <= 1); rescale the data to avoid distortion",
            stacklevel=3,  # the caller of private_release
        )


def private_release(
    key: PRNGKeyArray | None,
    data: Any,
    *,
    num_projections: int,
    epsilon: Real,
    delta: Real,
    num_releases: int = 1,
    batch_size: int | None = None,
    num_quantiles: int | None = None,
    sensitivity: str = "chernoff",
) -> tuple[SlicedRelease, PrivacyCertificate]:
    """The DP-SW mechanism: calibrate, draw ``num_releases`` noisy projections of the private rows, sort them.

    The only function of :mod:`dpflows.swf` that reads ``data``. Release t (t < T = ``num_releases``)
    publishes V_t = Θ_t Y_tᵀ + Z_t with Θ_t ∈ ℝ^{k×d} uniform unit rows, Y_t the rows (clipped to the
    unit ball) of a Poisson batch of expected size ``batch_size`` (all rows if None), and
    Z_t ~ N(0, σ_t²), σ_t = s·Δ_t. Directions, batch and noise come from ``fold_in(key, t)``.

    Sensitivity (``sensitivity``): "chernoff" (default; exact Beta-law tail bound), "clt" (the
    paper's approximation, not a bound), "bernstein" (rigorous, loose): Δ from
    :func:`sensitivity_bound` at failure probability δ/(2T) per release, charged to δ; "operator":
    Δ_t = 2‖Θ_t‖₂ of the drawn directions (deterministic, all of δ to the mechanism).

    Calibration (:mod:`dpflows.privacy.calibration`): s = ``calibrate_subsampled_gaussian(ε, δ',
    T, q)`` — analytic Gaussian for one full-batch release, √T times it for T full-batch releases,
    PLD bisection otherwise. ``epsilon=math.inf`` releases without noise (``covers="none"``).

    Args:
        key: the release key; None draws one from OS entropy (:func:`dpflows.privacy.release_key`,
            recommended). Never reuse or publish the key of a real release.
        data: (m, d) private rows; rows outside the unit ball are projected onto it (with a warning).
        num_projections: k directions per release.
        epsilon: target ε > 0, or ``math.inf``.
        delta: target δ ∈ (0, 1).
        num_releases: T ≥ 1 (DPSWflow-r: one per step).
        batch_size: expected Poisson batch size B ≤ m (rate q = B/m); None: every row, every release.
        num_quantiles: None (exact sorted tables, width = the largest batch) or P ≥ 2 percentiles.
        sensitivity: one of :data:`SENSITIVITY_METHODS`.

    Returns:
        ``(release, certificate)``: the :class:`SlicedRelease` and ``release.certificate``.

    Raises:
        ValueError, TypeError: naming the argument.
    """
    y = _check_data(data)
    m, d = y.shape
    k = _validate.positive_int("num_projections", num_projections)
    num_releases = _validate.positive_int("num_releases", num_releases)
    eps = _check_epsilon(epsilon)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    _validate.one_of("sensitivity", sensitivity, SENSITIVITY_METHODS)
    if num_quantiles is not None and _validate.positive_int("num_quantiles", num_quantiles) < 2:
        raise ValueError(f"num_quantiles must be None or >= 2, got {num_quantiles}")
    if batch_size is not None and _validate.positive_int("batch_size", batch_size) > m:
        raise ValueError(f"batch_size must be <= the number of private rows {m}, got {batch_size}")
    _warn_unclipped(y)
    q = 1.0 if batch_size is None else batch_size / m
    cal = _calibration(eps, float(delta), k, d, m, num_releases, q, sensitivity)
    key = privacy.release_key() if key is None else key
    width = _batch_width(key, m, q, num_releases)  # the widest batch fixes the table width
    sens = 0.0 if math.isnan(cal["sensitivity"]) else cal["sensitivity"]
    theta, tables, counts, std = _build_tables(
        key,
        _clip_rows(y),
        cal["noise_multiplier"],
        sens,
        k=k,
        sampling_rate=q,
        method=sensitivity,
        width=width,
        num_quantiles=num_quantiles,
        ts=jnp.arange(num_releases, dtype=jnp.int32),
    )
    release = SlicedRelease(
        directions=theta,
        tables=tables,
        counts=counts,
        noise_std=std,
        **{f: _leaf(cal[f]) for f in _PRIVACY_FIELDS},
        num_quantiles=num_quantiles,
        method=sensitivity,
    )
    return release, release.certificate
