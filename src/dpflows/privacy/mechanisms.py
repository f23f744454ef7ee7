"""Noise-adding mechanisms. Each returns its output *with* the certificate of the noise it drew.

One source of truth: the noise scale is computed once (``laplace_scale``, ``gaussian_scale``) and
the certificate's ε is derived *from that scale*, so the noise that was added and the privacy that
is reported cannot drift apart.

Two noise paths:

- ``snap=True`` (default for the central mechanisms): Mironov's (2012) snapping in float64 —
  clamp f to [−B, B], add noise from a 52-bit uniform, round to the power-of-two grid Λ, clamp.
  The *ideal* snapped mechanism is post-processing of the real-valued one, so it keeps (ε, δ). The
  float sampler differs from it in two ways, both bounded here (derivation in
  :func:`snapping_guarantee`): each grid cell's probability is off by at most η (one count of the
  uniform grid), and float addition moves cell boundaries by at most one ulp of B + max|noise|.
  The certificate states the resulting (ε′, δ′) exactly; it is (ε + ~0.002, ~1e-12)-DP for the
  defaults. Needs ``jax.enable_x64``.
- ``snap=False``: plain float noise, for *simulation only*. Against an adversary who sees the
  bits it is not private (measured for jax.random: 89% of float32 Laplace outputs at ε = 1 are
  impossible under the neighbouring input); the certificate says ``float_safe=False``.

Keys: JAX's PRNG is reproducible, not secret. Pass ``key=None`` (or :func:`release_key`) to draw
the noise key from the operating system's entropy for a real release.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import dp_accounting as dpa
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from scipy import special, stats

from .. import _validate
from .._typing import Real
from ._gaussian import calibrate_gaussian
from .certificate import THREAT_MODEL, PrivacyCertificate, Release

__all__ = [
    "exponential_mechanism",
    "gaussian_ldp",
    "gaussian_mechanism",
    "gaussian_scale",
    "laplace_ldp",
    "laplace_mechanism",
    "laplace_scale",
    "release_key",
    "snapping_guarantee",
]

_SNAP_R = 1e-3  # relative per-cell error allowed before a grid cell counts as "bad" (see snapping_guarantee)
_UNIFORM_BITS = 52
# A float sample f + s·b·(−log u) (or σ·Φ⁻¹(u)) carries a few roundings: the transcendental (≤ 1 ulp
# of its result, scaled), the product and the sum. 4 ulps of B + max|noise| bounds their total shift.
_BOUNDARY_ULPS = 4


def release_key() -> jax.Array:
    """A PRNG key seeded from the operating system's entropy (``secrets``), for real releases.

    Never store or print it: anyone holding the key can regenerate the noise.
    """
    words = np.array([secrets.randbits(32), secrets.randbits(32)], dtype=np.uint32)
    return jr.wrap_key_data(jnp.asarray(words), impl="threefry2x32")


def _key(key):
    if key is None:
        return release_key(), "noise key from OS entropy (secrets); never stored"
    _validate.prng_key("key", key)
    return key, "noise key supplied by the caller: it must be secret and used once"


# ------------------------------------------------------------------------------------ scales
def laplace_scale(sensitivity: Real, epsilon: Real) -> float:
    """B = Δ₁/ε: the Laplace scale for ε-DP.

    Raises:
        ValueError: Δ₁ or ε not finite and > 0, or a ratio that over/underflows a float.
    """
    _check_common(sensitivity, epsilon)
    scale = float(sensitivity) / float(epsilon)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"sensitivity / epsilon must be a finite positive float, got {sensitivity!r} / {epsilon!r} = {scale!r}"
        )
    return scale


def gaussian_scale(sensitivity: Real, epsilon: Real, delta: Real) -> float:
    """σ for (ε, δ)-DP by the analytic Gaussian mechanism (Balle & Wang 2018).

    Raises:
        ValueError: Δ₂ or ε not finite and > 0, δ ∉ (0, 1), or a σ that is not a finite positive float.
    """
    _check_common(sensitivity, epsilon)
    _validate.required("delta", delta)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    sigma = calibrate_gaussian(epsilon, delta, sensitivity)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"the noise scale for sensitivity={sensitivity!r}, epsilon={epsilon!r}, delta={delta!r} is not a "
            f"finite positive float (got {sigma!r}): rescale the query"
        )
    return sigma


def _check_common(sensitivity, epsilon):
    for name, value in (("sensitivity", sensitivity), ("epsilon", epsilon)):
        _validate.required(name, value)
        _validate.positive(name, value)
        if _validate.is_concrete(value):
            _validate.scalar(name, value)


def _as_values(name, value):
    if not isinstance(value, jax.Array):  # NumPy/Python input: refuse what the cast would make inf
        _validate.representable(name, value, jnp.result_type(float))
    v = _validate.floating_array(name, value)
    return _validate.finite(name, v)


def _finite_release(out, scale_name: str):
    """A float release that overflowed (huge value or noise scale) is refused, never returned as inf."""
    if _validate.is_concrete(out) and not bool(np.all(np.isfinite(np.asarray(out)))):
        raise ValueError(f"value + noise overflows {out.dtype}: value or {scale_name} is too large for this dtype")
    return out


# ------------------------------------------------------------------------------------ snapping
# e^ε enters the snapping bound: beyond ~709 it overflows a float (and such an ε protects nothing).
_MAX_SNAP_EPSILON = 700.0


def _grid(scale: Real, fraction: Real) -> float:
    """Λ = the smallest power of two ≥ fraction·scale."""
    return 2.0 ** math.ceil(math.log2(fraction * scale))


def snapping_guarantee(
    kind: str,
    *,
    scale: Real,
    grid: Real,
    bound: Real,
    sensitivity: Real,
    epsilon: Real,
    delta: Real = 0.0,
    dim: int = 1,
) -> dict[str, float]:
    """(ε′, δ′) of the float64 snapped sampler, given the ideal (ε, δ) of its real-valued version.

    Derivation (written for one coordinate; ``dim`` coordinates that may all differ multiply the
    per-coordinate terms, with r = 1e-3/dim):

    1. The noise is F⁻¹(u) with u = (k + ½)2⁻⁵² and k uniform on 52 bits (Laplace: a separate sign
       bit, so u-mass per count is 2⁻⁵³). A grid cell j is an interval in u, so its float
       probability P(j) differs from the ideal p(j) by at most η (η = 2⁻⁵³ Laplace, 2⁻⁵² Gaussian).
    2. Cells with p(j) ≥ η/r and p′(j) ≥ η/r ("good") satisfy P(j)/P′(j) ≤ (1+r)/(1−r) · p(j)/p′(j).
       The float arithmetic moves a cell boundary by at most γ = 4 ulp(B + max|noise|), which changes a cell
       probability by a factor at most e^{γ/b} (Laplace) or e^{(x*γ + γ²/2)/σ²} (Gaussian, cell
       within x* of the centre): twice that (both inputs) is ``epsilon_shift``.
    3. Every other cell lies beyond x*, where the ideal cell mass falls below τ = e^ε η / r; their
       total mass is at most the noise tail beyond x* − Λ − Δ plus η per reachable cell.

    Hence, for any event S: P(S) ≤ e^{ε′} P′(S) + δ′ with ε′ = ε + log((1+r)/(1−r)) + ε_shift and
    δ′ = (1+r)δ + tail. This is a bound we derived, not a quoted theorem; the tests check its
    premises (grid, support, monotone sampler) and audit the output.

    Raises:
        ValueError: ``kind`` unknown, a scale/grid/bound/sensitivity/ε not finite and > 0, δ ∉ [0, 1),
            ``dim`` < 1.
    """
    _validate.one_of("kind", kind, ("laplace", "gaussian"))
    for name, value in (("scale", scale), ("grid", grid), ("bound", bound), ("delta", delta)):
        _validate.required(name, value)
        _validate.scalar(name, value)
    for name, value in (("scale", scale), ("grid", grid), ("bound", bound)):
        _validate.positive(name, value)
    _check_common(sensitivity, epsilon)
    if float(epsilon) > _MAX_SNAP_EPSILON:
        raise ValueError(
            f"epsilon must be <= {_MAX_SNAP_EPSILON} for the snapping bound (e^ε overflows), got {epsilon}"
        )
    _validate.in_half_open_interval("delta", delta, 0.0, 1.0)
    dim = _validate.positive_int("dim", dim)
    r = _SNAP_R / dim
    log_ratio = math.log((1 + r) / (1 - r))
    if kind == "laplace":
        eta = 2.0 ** -(_UNIFORM_BITS + 1)
        max_noise = scale * (_UNIFORM_BITS + 1) * math.log(2)
        tau = math.exp(epsilon) * eta / r
        # Ideal mass of a cell of width Λ whose near edge is x from the centre: ½e^{−x/b}(1 − e^{−Λ/b}).
        x_star = scale * math.log(-math.expm1(-grid / scale) / (2 * tau))
        tail = math.exp(-max(x_star - grid - sensitivity, 0.0) / scale)
        gamma = _BOUNDARY_ULPS * float(np.spacing(bound + max_noise))
        eps_shift = 2 * gamma / scale
    elif kind == "gaussian":
        eta = 2.0**-_UNIFORM_BITS
        max_noise = scale * float(-special.ndtri(2.0**-_UNIFORM_BITS))
        tau = math.exp(epsilon) * eta / r

        def cell(x):  # ideal mass of the cell [x, x + Λ] (upper tail)
            return float(stats.norm.sf(x / scale) - stats.norm.sf((x + grid) / scale))

        lo, hi = 0.0, max_noise
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cell(mid) > tau else (lo, mid)
        x_star = hi
        tail = 2 * float(stats.norm.sf(max(x_star - grid - sensitivity, 0.0) / scale))
        gamma = _BOUNDARY_ULPS * float(np.spacing(bound + max_noise))
        eps_shift = 2 * (x_star * gamma + gamma**2 / 2) / scale**2
    else:
        raise ValueError(f"kind must be 'laplace' or 'gaussian', got {kind!r}")
    reachable = 2 * (math.ceil(max_noise / grid) + 2)
    eps_prime = epsilon + dim * (log_ratio + eps_shift)
    delta_prime = (1 + r) ** dim * delta + dim * (tail + reachable * eta)
    return {
        "epsilon": eps_prime,
        "delta": min(delta_prime, 1.0),
        "grid": grid,
        "bound": bound,
        "x_star": x_star,
        "tail": tail,
        "epsilon_shift": eps_shift,
        "r": r,
    }


def _require_x64(name: str):
    if not jax.config.jax_enable_x64:
        raise ValueError(
            f"{name}(snap=True) samples in float64: wrap the call in `with jax.enable_x64(True):`, "
            "or pass snap=False for simulation only (unsnapped float noise is not bit-level private)"
        )


def _uniform52(key, shape):
    k = jr.bits(key, shape, dtype=jnp.uint64) >> 12  # 52 random bits
    return (k.astype(jnp.float64) + 0.5) * 2.0**-_UNIFORM_BITS


def _snap(values, noise, grid, bound):
    y = jnp.clip(jnp.clip(values, -bound, bound) + noise, -bound, bound)
    return jnp.clip(grid * jnp.round(y / grid), -bound, bound)


def _snap_bound(bound, grid, scale):
    b = float(bound) if bound is not None else 2.0**20 * grid
    _validate.positive("bound", b)
    if b < scale:
        raise ValueError(f"bound must be >= the noise scale {scale:.4g} for snapping, got {b}")
    if b / grid > 2.0**45:
        raise ValueError(f"bound / grid must be < 2^45 for exact float64 grid arithmetic, got {b / grid:.3g}")
    return grid * math.ceil(b / grid)


# ------------------------------------------------------------------------------ central mechanisms
def laplace_mechanism(
    key: Any, value: Any, *, sensitivity: Real, epsilon: Real, snap: bool = True, bound: Real | None = None
) -> Release:
    """Release ``value`` + Laplace(b) noise, b = Δ₁/ε, with its certificate.

    Args:
        key: a PRNG key, or ``None`` for OS entropy (real releases).
        value: the query answer (scalar or array); Δ₁ bounds the L1 change of the whole array.
        sensitivity: Δ₁ > 0.
        epsilon: ε > 0.
        snap: snapped float64 release (default) or plain float noise (simulation only).
        bound: B, the clamp of the query and the output (snap only; default 2²⁰Λ).

    Returns:
        ``Release(value, certificate)``; the certificate's ε is Δ₁/b of the scale actually used
        (plus the snapping terms when ``snap``).
    """
    _check_common(sensitivity, epsilon)
    key, key_note = _key(key)
    values = _as_values("value", value)
    scale = laplace_scale(sensitivity, epsilon)
    eps_ideal = float(sensitivity) / scale
    event = dpa.LaplaceDpEvent(scale / float(sensitivity))
    if not snap:
        _validate.representable("sensitivity / epsilon (the noise scale)", scale, values.dtype)
        noise = scale * jr.laplace(key, values.shape, dtype=values.dtype)
        cert = PrivacyCertificate(
            eps_ideal,
            0.0,
            f"laplace(sensitivity={sensitivity:g}, scale={scale:.6g})",
            "mechanism",
            notes=f"simulation only: unsnapped float noise is not bit-level private. {key_note}. {THREAT_MODEL}",
            event=event,
            parameters={"kind": "laplace", "scale": scale, "sensitivity": float(sensitivity)},
        )
        return Release(_finite_release(values + noise, "sensitivity / epsilon"), cert)
    _require_x64("laplace_mechanism")
    values = values.astype(jnp.float64)
    grid = _grid(scale, 1.0)
    bound = _snap_bound(bound, grid, scale)
    k_mag, k_sign = jr.split(key)
    magnitude = -jnp.log(_uniform52(k_mag, values.shape))
    sign = jnp.where(jr.bernoulli(k_sign, 0.5, values.shape), 1.0, -1.0)
    out = _snap(values, scale * sign * magnitude, grid, bound)
    dim = max(int(np.prod(values.shape)), 1)
    g = snapping_guarantee(
        "laplace", scale=scale, grid=grid, bound=bound, sensitivity=float(sensitivity), epsilon=eps_ideal, dim=dim
    )
    cert = PrivacyCertificate(
        g["epsilon"],
        g["delta"],
        f"snapped laplace(sensitivity={sensitivity:g}, scale={scale:.6g}, grid={grid:g}, bound={bound:g})",
        "mechanism",
        notes=(
            f"Mironov (2012) snapping in float64 with a 52-bit uniform; ideal ε = {eps_ideal:.6g}, float effects "
            f"bounded by dpflows.privacy.snapping_guarantee. {key_note}."
        ),
        event=event,
        parameters={"kind": "laplace", "scale": scale, "sensitivity": float(sensitivity), **g},
        float_safe=True,
    )
    return Release(out, cert)


def gaussian_mechanism(
    key: Any,
    value: Any,
    *,
    sensitivity: Real,
    epsilon: Real,
    delta: Real,
    snap: bool = True,
    bound: Real | None = None,
) -> Release:
    """Release ``value`` + N(0, σ²) with σ from the analytic Gaussian mechanism, with its certificate.

    Args:
        key: a PRNG key, or ``None`` for OS entropy.
        value: the query answer; Δ₂ bounds the L2 change of the whole array.
        sensitivity: Δ₂ > 0.
        epsilon: ε > 0.
        delta: δ ∈ (0, 1).
        snap: snapped float64 release (default; grid Λ ≤ σ/4) or plain float noise (simulation).
        bound: B (snap only; default 2²⁰Λ).
    """
    _check_common(sensitivity, epsilon)
    _validate.required("delta", delta)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    key, key_note = _key(key)
    values = _as_values("value", value)
    sigma = gaussian_scale(sensitivity, epsilon, delta)
    event = dpa.GaussianDpEvent(sigma / float(sensitivity))
    params = {"kind": "gaussian", "scale": sigma, "sensitivity": float(sensitivity)}
    if not snap:
        _validate.representable("the noise scale sigma (from sensitivity, epsilon, delta)", sigma, values.dtype)
        noise = sigma * jr.normal(key, values.shape, dtype=values.dtype)
        cert = PrivacyCertificate(
            float(epsilon),
            float(delta),
            f"gaussian(sensitivity={sensitivity:g}, sigma={sigma:.6g})",
            "mechanism",
            notes=f"analytic Gaussian (Balle & Wang 2018); simulation only: unsnapped float noise. {key_note}. "
            f"{THREAT_MODEL}",
            event=event,
            parameters=params,
        )
        return Release(_finite_release(values + noise, "the noise scale"), cert)
    _require_x64("gaussian_mechanism")
    values = values.astype(jnp.float64)
    grid = _grid(sigma, 0.125)
    bound = _snap_bound(bound, grid, sigma)
    noise = sigma * jax.scipy.special.ndtri(_uniform52(key, values.shape))
    out = _snap(values, noise, grid, bound)
    dim = max(int(np.prod(values.shape)), 1)
    g = snapping_guarantee(
        "gaussian",
        scale=sigma,
        grid=grid,
        bound=bound,
        sensitivity=float(sensitivity),
        epsilon=float(epsilon),
        delta=float(delta),
        dim=dim,
    )
    cert = PrivacyCertificate(
        g["epsilon"],
        g["delta"],
        f"snapped gaussian(sensitivity={sensitivity:g}, sigma={sigma:.6g}, grid={grid:g})",
        "mechanism",
        notes=(
            f"analytic Gaussian (ε={epsilon:g}, δ={delta:g}) snapped in float64; float effects bounded by "
            f"dpflows.privacy.snapping_guarantee. {key_note}."
        ),
        event=event,
        parameters={**params, **g},
        float_safe=True,
    )
    return Release(out, cert)


# ------------------------------------------------------------------------------ local randomisers
def _check_records(name: str, x):
    x = _validate.floating_array(name, x, min_ndim=2)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one record, got shape {x.shape}")
    if _validate.is_concrete(x):
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"{name} must be finite: NaN/inf records would pass straight through the noise")
        return x
    # Under jit: refuse at run time rather than let NaN + noise leak membership.
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} must be finite")


def clip_box(x, bound):
    """Clip every coordinate to [−bound, bound] (the LDP Laplace domain)."""
    return jnp.clip(x, -bound, bound)


def project_ball(x, radius):
    """Project every record onto the L2 ball of the given radius (the LDP Gaussian domain)."""
    norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x * jnp.minimum(1.0, radius / jnp.maximum(norms, jnp.finfo(x.dtype).tiny))


def laplace_ldp(key: Any, x: Any, *, epsilon: Real, bound: Real) -> Release:
    """ε-LDP Laplace randomiser: clip each record to [−B, B]ᵈ, add i.i.d. Laplace(b) per coordinate.

    The L1 diameter of the box is 2Bd, so b = 2Bd/ε makes each record's release ε-DP (replace-one,
    the local model). Returns the privatized records (n, d); the certificate is per record and its
    ``parameters["scale"]`` is b. Float noise (simulation path): see the module docstring.
    """
    for name, value in (("epsilon", epsilon), ("bound", bound)):
        _validate.required(name, value)
        _validate.positive(name, _validate.scalar(name, value))
    key, key_note = _key(key)
    x = _check_records("x", x)
    d = x.shape[1]
    sensitivity = 2.0 * float(bound) * d
    if not math.isfinite(sensitivity):
        raise ValueError(f"bound is too large: the box's L1 diameter 2·bound·d overflows, got bound={bound!r}")
    scale = laplace_scale(sensitivity, epsilon)
    y = clip_box(x, bound) + scale * jr.laplace(key, x.shape, dtype=x.dtype)
    cert = PrivacyCertificate(
        sensitivity / scale,
        0.0,
        f"laplace_ldp(box=[-{bound:g},{bound:g}]^{d}, scale={scale:.6g})",
        "mechanism",
        notes=f"per record, local model (replace-one); records clipped first. {key_note}. {THREAT_MODEL}",
        event=dpa.LaplaceDpEvent(scale / sensitivity),
        parameters={"kind": "laplace", "scale": scale, "sensitivity": sensitivity, "bound": float(bound)},
    )
    return Release(y, cert)


def gaussian_ldp(key: Any, x: Any, *, epsilon: Real, delta: Real, radius: Real) -> Release:
    """(ε, δ)-LDP Gaussian randomiser: project each record onto the L2 ball of radius R, add N(0, σ²I).

    Δ₂ = 2R (replace-one), σ by the analytic Gaussian mechanism; ``parameters["scale"]`` is σ.
    """
    for name, value in (("epsilon", epsilon), ("delta", delta), ("radius", radius)):
        _validate.required(name, value)
        _validate.scalar(name, value)
    _validate.positive("epsilon", epsilon)
    _validate.in_open_interval("delta", delta, 0.0, 1.0)
    _validate.positive("radius", radius)
    key, key_note = _key(key)
    x = _check_records("x", x)
    sensitivity = 2.0 * float(radius)
    if not math.isfinite(sensitivity):
        raise ValueError(f"radius is too large: 2·radius overflows, got radius={radius!r}")
    sigma = gaussian_scale(sensitivity, epsilon, delta)
    y = project_ball(x, radius) + sigma * jr.normal(key, x.shape, dtype=x.dtype)
    cert = PrivacyCertificate(
        float(epsilon),
        float(delta),
        f"gaussian_ldp(ball radius {radius:g}, sigma={sigma:.6g})",
        "mechanism",
        notes=f"per record, local model; analytic Gaussian. {key_note}. {THREAT_MODEL}",
        event=dpa.GaussianDpEvent(sigma / sensitivity),
        parameters={"kind": "gaussian", "scale": sigma, "sensitivity": sensitivity, "radius": float(radius)},
    )
    return Release(y, cert)


def exponential_mechanism(key: Any, utilities: Any, *, sensitivity: Real, epsilon: Real) -> Release:
    """Pick an index with probability ∝ exp(ε u_i / (2Δ)) by the Gumbel-max trick.

    ε-DP and ε-bounded range (so it composes as ε²/8-zCDP in :class:`PrivacyLedger`).
    """
    _check_common(sensitivity, epsilon)
    key, key_note = _key(key)
    u = _as_values("utilities", utilities)
    scale = 2.0 * float(sensitivity) / float(epsilon)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"2 sensitivity / epsilon must be a finite positive float, got {scale!r}")
    if u.ndim != 1 or u.shape[0] == 0:
        raise ValueError(f"utilities must be a non-empty 1-D array, got shape {u.shape}")
    idx = jnp.argmax(u / scale + jr.gumbel(key, u.shape, dtype=u.dtype))
    cert = PrivacyCertificate(
        2.0 * float(sensitivity) / scale,
        0.0,
        f"exponential mechanism over {u.shape[0]} candidates",
        "mechanism",
        notes=f"Gumbel-max sampling (float, not bit-level hardened). {key_note}.",
        parameters={"kind": "exponential", "scale": scale, "sensitivity": float(sensitivity)},
    )
    return Release(idx, cert)
