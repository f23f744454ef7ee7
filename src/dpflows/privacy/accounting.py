"""Composition: a ledger of releases, accounted with dp-accounting's PLD and RDP accountants.

dp-accounting is the maintained reference, so composition goes through it (we do not rewrite PLD).
What it lacks and we add: pure-DP and exponential-mechanism entries on the PLD side (as
``from_privacy_parameters``), the exponential mechanism's bounded-range structure on the RDP side
(ε₀²/8-zCDP, Cesar & Rogers 2021, instead of the generic ε₀²/2), certificates with (ε, δ) but no
event (basic composition on top), JSON round trips for checkpoints, and calibration by bisection.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import dp_accounting as dpa
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

from .. import _validate
from .._typing import Real
from .certificate import PrivacyCertificate

__all__ = ["PrivacyLedger", "calibrate_noise_multiplier"]

# dp-accounting's PLD default, so that our numbers equal its accountant's numbers.
_PLD_INTERVAL = 1e-4
# dp-accounting's default RDP orders plus the integer orders 2..64, 128..1024. At small σ and
# moderate q its series for fractional orders fails to converge and it silently drops those orders
# (an absl warning), which makes ε jump *down* as q grows; integer orders are computed exactly.
# Every order gives a valid bound, so the union only ever tightens and keeps ε monotone.
_RDP_ORDERS = tuple(sorted(set(rdp_lib.DEFAULT_RDP_ORDERS) | {float(a) for a in (*range(2, 65), 128, 256, 512, 1024)}))
_KINDS = ("gaussian", "laplace", "pure", "exponential", "approx")


@dataclasses.dataclass(frozen=True)
class _Entry:
    kind: str
    count: int
    noise_multiplier: Real | None = None
    sampling_rate: Real | None = None
    epsilon: Real | None = None
    delta: Real | None = None
    label: str = ""


def _count(count: Any) -> int:
    return _validate.positive_int("count", count)


def _nonneg(name: str, value: Any) -> float:
    """A finite scalar ≥ 0 as a float, naming ``name`` otherwise."""
    _validate.positive(name, value, allow_zero=True)
    return _validate.scalar(name, value)


def _pos(name: str, value: Any) -> float:
    """A finite scalar > 0 as a float, naming ``name`` otherwise."""
    _validate.positive(name, value)
    return _validate.scalar(name, value)


def _check_orders(orders: Any) -> tuple[Any, ...]:
    try:
        values = tuple(_validate.scalar("orders", a) for a in orders)
    except TypeError as err:
        raise TypeError(f"orders must be a sequence of numbers > 1, got {orders!r}") from err
    if not values or not all(math.isfinite(a) and a > 1 for a in values):
        raise ValueError(f"orders must be a non-empty sequence of finite numbers > 1, got {orders!r}")
    return tuple(orders)


def _check_entry(e: _Entry) -> None:
    """Refuse a deserialised entry whose numbers the add_* methods would have refused."""
    _count(e.count)
    if e.kind in ("gaussian", "laplace"):
        _nonneg("noise_multiplier", e.noise_multiplier)
    if e.sampling_rate is not None:
        _validate.in_closed_interval("sampling_rate", _validate.scalar("sampling_rate", e.sampling_rate), 0.0, 1.0)
    if e.kind in ("pure", "exponential"):
        _pos("epsilon", e.epsilon)
    if e.kind == "approx":
        _nonneg("epsilon", e.epsilon)
        _validate.in_closed_interval("delta", _validate.scalar("delta", e.delta), 0.0, 1.0)


class PrivacyLedger:
    """A record of every release of a run, composed on demand.

    Example:
        >>> ledger = PrivacyLedger().add_gaussian(2.0, count=100)
        >>> round(ledger.epsilon(1e-5, accountant="pld"), 4)
        33.1037
    """

    def __init__(self):
        self._entries: list[_Entry] = []

    # ------------------------------------------------------------------------------ additions
    def add_gaussian(self, noise_multiplier: Real, count: int = 1, sampling_rate: Real | None = None):
        """``count`` Gaussian releases with σ/Δ₂ = ``noise_multiplier`` (Poisson-subsampled at ``sampling_rate``)."""
        noise_multiplier = _nonneg("noise_multiplier", noise_multiplier)
        if sampling_rate is not None:
            sampling_rate = _validate.scalar("sampling_rate", sampling_rate)
            _validate.in_closed_interval("sampling_rate", sampling_rate, 0.0, 1.0)
        self._entries.append(_Entry("gaussian", _count(count), noise_multiplier, sampling_rate))
        return self

    def add_laplace(self, noise_multiplier: Real, count: int = 1):
        """``count`` Laplace releases with scale/Δ₁ = ``noise_multiplier`` (pure ε = 1/noise_multiplier each)."""
        noise_multiplier = _nonneg("noise_multiplier", noise_multiplier)
        self._entries.append(_Entry("laplace", _count(count), noise_multiplier))
        return self

    def add_pure(self, epsilon: Real, count: int = 1):
        """``count`` releases that are ε-DP and nothing more is known."""
        self._entries.append(_Entry("pure", _count(count), epsilon=_pos("epsilon", epsilon)))
        return self

    def add_exponential(self, epsilon: Real, count: int = 1):
        """``count`` exponential mechanisms (ε-bounded range: composes as ε²/8-zCDP, not ε²/2)."""
        self._entries.append(_Entry("exponential", _count(count), epsilon=_pos("epsilon", epsilon)))
        return self

    def add_certificate(self, cert: PrivacyCertificate, count: int = 1):
        """Add a certificate: through its event when it has one, else as an (ε, δ) pair.

        A self-composed event (T releases) is composed tightly by the accountant, and the
        certificate's ``event_failure`` (a high-probability sensitivity bound's failure, part of its
        δ) is added as a (0, failure) entry, so the ledger never reports less than the certificate.

        Snapped (``float_safe``) releases compose as their stated (ε′, δ′): their event describes
        the ideal mechanism only, without the floating-point terms.

        Raises:
            ValueError: the certificate covers only an ideal flow, or nothing.
        """
        if not isinstance(cert, PrivacyCertificate):
            raise TypeError(f"cert must be a PrivacyCertificate, got {type(cert).__name__}")
        if cert.covers != "mechanism":
            raise ValueError(
                f"cannot compose a certificate with covers={cert.covers!r}: only guarantees of released outputs "
                "(covers='mechanism') compose"
            )
        count = _count(count)
        if cert.float_safe and cert.delta > 0:
            # A snapped release's guarantee is its stated (ε′, δ′), which includes the float effects;
            # its event describes only the ideal real-valued mechanism, so it must not be used here.
            self._entries.append(
                _Entry("approx", count, epsilon=float(cert.epsilon), delta=float(cert.delta), label=cert.mechanism)
            )
            return self
        event, repeats = cert.event, count
        if isinstance(event, dpa.SelfComposedDpEvent):  # T releases of one event: compose them tightly
            event, repeats = event.event, count * event.count
        added = True
        if isinstance(event, dpa.GaussianDpEvent):
            self.add_gaussian(event.noise_multiplier, repeats)
        elif isinstance(event, dpa.LaplaceDpEvent):
            self.add_laplace(event.noise_multiplier, repeats)
        elif isinstance(event, dpa.PoissonSampledDpEvent) and isinstance(event.event, dpa.GaussianDpEvent):
            self.add_gaussian(event.event.noise_multiplier, repeats, event.sampling_probability)
        else:
            added = False
        if added:
            if cert.event_failure > 0:  # the event holds except with this probability: charged to δ
                self._entries.append(
                    _Entry("approx", count, epsilon=0.0, delta=cert.event_failure, label=f"{cert.mechanism}: failure")
                )
            return self
        if cert.parameters.get("kind") == "exponential" and cert.delta == 0:
            return self.add_exponential(cert.epsilon, count)
        if cert.delta == 0:
            return self.add_pure(cert.epsilon, count)
        self._entries.append(
            _Entry("approx", count, epsilon=float(cert.epsilon), delta=float(cert.delta), label=cert.mechanism)
        )
        return self

    # --------------------------------------------------------------------------------- queries
    @property
    def entries(self) -> tuple[_Entry, ...]:
        """The recorded entries, in order."""
        return tuple(self._entries)

    def _approx_totals(self) -> tuple[float, float]:
        eps = sum((e.count * e.epsilon for e in self._entries if e.kind == "approx"), 0.0)
        delta = sum((e.count * e.delta for e in self._entries if e.kind == "approx"), 0.0)
        return eps, delta

    def _non_private(self) -> bool:
        return any(
            e.kind in ("gaussian", "laplace") and e.noise_multiplier == 0 and e.sampling_rate != 0
            for e in self._entries
        )

    def _pure_total(self) -> float | None:
        """Σ ε over entries when every entry is pure (Laplace, pure, exponential), else None."""
        total = 0.0
        for e in self._entries:
            if e.kind == "laplace":
                total += e.count / e.noise_multiplier
            elif e.kind in ("pure", "exponential"):
                total += e.count * e.epsilon
            elif e.kind == "approx" or (e.kind == "gaussian" and e.sampling_rate != 0):
                return None
        return total

    def _pld(self):
        pld = None
        for e in self._entries:
            if e.kind == "gaussian":
                if e.sampling_rate == 0:
                    continue
                if e.sampling_rate is None or e.sampling_rate == 1:
                    # k Gaussians are one Gaussian with σ/√k (exact; dp-accounting does the same).
                    part = pld_lib.from_gaussian_mechanism(
                        standard_deviation=e.noise_multiplier / math.sqrt(e.count),
                        value_discretization_interval=_PLD_INTERVAL,
                    )
                else:
                    part = pld_lib.from_gaussian_mechanism(
                        standard_deviation=e.noise_multiplier,
                        sampling_prob=e.sampling_rate,
                        value_discretization_interval=_PLD_INTERVAL,
                    ).self_compose(e.count)
            elif e.kind == "laplace":
                part = pld_lib.from_laplace_mechanism(
                    parameter=e.noise_multiplier, value_discretization_interval=_PLD_INTERVAL
                ).self_compose(e.count)
            elif e.kind in ("pure", "exponential"):
                part = pld_lib.from_privacy_parameters(
                    pld_common.DifferentialPrivacyParameters(e.epsilon, 0.0),
                    value_discretization_interval=_PLD_INTERVAL,
                ).self_compose(e.count)
            else:
                continue
            pld = part if pld is None else pld.compose(part)
        return pld

    def _rdp(self, orders):
        acc = rdp_lib.RdpAccountant(orders=list(orders))
        for e in self._entries:
            if e.kind == "gaussian":
                ev = dpa.GaussianDpEvent(e.noise_multiplier)
                if e.sampling_rate is not None and e.sampling_rate != 1:
                    ev = dpa.PoissonSampledDpEvent(e.sampling_rate, ev)
                acc.compose(ev, e.count)
            elif e.kind == "laplace":
                acc.compose(dpa.LaplaceDpEvent(e.noise_multiplier), e.count)
            elif e.kind == "pure":
                acc.compose(dpa.ZCDpEvent(e.epsilon**2 / 2), e.count)  # Bun & Steinke 2016
            elif e.kind == "exponential":
                acc.compose(dpa.ZCDpEvent(e.epsilon**2 / 8), e.count)  # Cesar & Rogers 2021
        return acc

    def epsilon(self, delta: Real, accountant: str = "pld", *, orders=_RDP_ORDERS) -> float:
        """ε of the whole ledger at ``delta``.

        Args:
            delta: target δ ∈ [0, 1]. At δ = 0 the answer is the pure-DP sum (∞ if any entry is
                not pure). Entries added as (ε, δ) pairs are composed by basic composition: their
                δs are taken out of ``delta`` first and their εs added at the end.
            accountant: ``"pld"`` (tight; dp-accounting's PLD), ``"rdp"`` (dp-accounting's RDP),
                or ``"best"`` (the smaller; both are valid upper bounds). When every entry is
                pure (Laplace, pure, exponential) the result is also capped by Σε, which is valid
                at any δ and sometimes tighter than either accountant.
            orders: RDP orders (default: dp-accounting's defaults ∪ integer orders).
        """
        delta = _validate.scalar("delta", delta)
        _validate.in_closed_interval("delta", delta, 0.0, 1.0)
        _validate.one_of("accountant", accountant, ("pld", "rdp", "best"))
        orders = _check_orders(orders)
        if self._non_private():
            return math.inf
        pure = self._pure_total()
        if delta == 0:
            return math.inf if pure is None else pure
        if accountant == "best":
            return min(self.epsilon(delta, "pld", orders=orders), self.epsilon(delta, "rdp", orders=orders))
        approx_eps, approx_delta = self._approx_totals()
        remaining = delta - approx_delta
        if not any(e.kind != "approx" for e in self._entries):
            # Only (ε, δ) pairs: basic composition holds at exactly their summed δ (up to rounding).
            return approx_eps if remaining >= -1e-12 * max(delta, approx_delta) else math.inf
        if remaining <= 0:
            return math.inf
        if accountant == "pld":
            pld = self._pld()
            eps = 0.0 if pld is None else float(pld.get_epsilon_for_delta(remaining))
        else:
            eps = float(self._rdp(orders).get_epsilon(remaining))
        if pure is not None:
            eps = min(eps, pure)
        return max(eps, 0.0) + approx_eps

    def delta(self, epsilon: Real, accountant: str = "pld", *, orders=_RDP_ORDERS) -> float:
        """δ of the whole ledger at ``epsilon`` (same conventions as :meth:`epsilon`)."""
        epsilon = _nonneg("epsilon", epsilon)
        _validate.one_of("accountant", accountant, ("pld", "rdp", "best"))
        orders = _check_orders(orders)
        if self._non_private():
            return 1.0
        if accountant == "best":
            return min(self.delta(epsilon, "pld", orders=orders), self.delta(epsilon, "rdp", orders=orders))
        approx_eps, approx_delta = self._approx_totals()
        eps = epsilon - approx_eps
        if eps < 0:
            return 1.0
        pure = self._pure_total()
        if pure is not None and eps >= pure:
            return min(1.0, approx_delta)
        if not any(e.kind != "approx" for e in self._entries):
            return min(1.0, approx_delta)
        if accountant == "pld":
            pld = self._pld()
            d = 0.0 if pld is None else float(pld.get_delta_for_epsilon(eps))
        else:
            d = float(self._rdp(orders).get_delta(eps))
        return min(1.0, d + approx_delta)

    # ------------------------------------------------------------------------------ serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (no pickle): ``{"version": 1, "entries": [...]}``."""
        return {"version": 1, "entries": [dataclasses.asdict(e) for e in self._entries]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrivacyLedger:
        """Inverse of :meth:`to_dict`; a malformed state raises ``ValueError``."""
        if not isinstance(state, dict) or state.get("version") != 1 or not isinstance(state.get("entries"), list):
            raise ValueError("ledger state must be {'version': 1, 'entries': [...]} as written by to_dict")
        ledger = cls()
        fields = {f.name for f in dataclasses.fields(_Entry)}
        for raw in state["entries"]:
            if not isinstance(raw, dict) or set(raw) != fields or raw["kind"] not in _KINDS:
                raise ValueError(f"malformed ledger entry: {raw!r}")
            entry = _Entry(**raw)
            try:
                _check_entry(entry)
            except (TypeError, ValueError) as err:
                raise ValueError(f"malformed ledger entry {raw!r}: {err}") from err
            ledger._entries.append(entry)
        return ledger

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    def __repr__(self) -> str:
        return f"PrivacyLedger({len(self._entries)} entries)"


def calibrate_noise_multiplier(
    target_epsilon: Real,
    target_delta: Real,
    steps: int,
    sampling_rate: Real | None = None,
    *,
    accountant: str = "pld",
    tol: Real = 1e-6,
) -> float:
    """Smallest σ (to relative ``tol``) such that ``steps`` (subsampled) Gaussian steps are (ε, δ)-DP.

    Bisection in log σ; the returned σ is the upper end of the final bracket, so its ε never
    exceeds the target.
    """
    target_epsilon = _pos("target_epsilon", target_epsilon)
    target_delta = _validate.scalar("target_delta", target_delta)
    _validate.in_open_interval("target_delta", target_delta, 0.0, 1.0)
    steps = _validate.positive_int("steps", steps)
    tol = _pos("tol", tol)
    if sampling_rate is not None:
        sampling_rate = _validate.scalar("sampling_rate", sampling_rate)
        _validate.in_closed_interval("sampling_rate", sampling_rate, 0.0, 1.0)
    _validate.one_of("accountant", accountant, ("pld", "rdp", "best"))

    def eps(sigma: Real) -> float:
        return PrivacyLedger().add_gaussian(sigma, steps, sampling_rate).epsilon(target_delta, accountant)

    lo, hi = 1e-2, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e7:
            raise ValueError("no noise multiplier below 1e7 meets the target; check target_epsilon/target_delta")
    while eps(lo) <= target_epsilon and lo > 1e-6:
        hi, lo = lo, lo / 2
    while hi / lo - 1 > tol:
        mid = math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
