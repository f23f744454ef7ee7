"""Privacy certificates: every DP number in dpflows, with what it covers and how it was computed."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, NamedTuple

from .. import _validate
from .._typing import Real

__all__ = ["COVERS", "PrivacyCertificate", "Release", "THREAT_MODEL"]

Covers = Literal["mechanism", "ideal flow", "none"]
COVERS: tuple[str, ...] = ("mechanism", "ideal flow", "none")

THREAT_MODEL = (
    "Guarantee for the idealised real-valued mechanism with a secret, truly random key. JAX's PRNG is "
    "reproducible, not secret: anyone holding the key can regenerate and subtract the noise; draw release keys "
    "with dpflows.privacy.release_key() (OS entropy) and never publish them. Unsnapped float noise is not "
    "protected against floating-point (Mironov 2012) or timing attacks."
)


@dataclasses.dataclass(frozen=True)
class PrivacyCertificate:
    """A differential-privacy claim and its scope.

    Attributes:
        epsilon: ε ≥ 0 (``math.inf`` for no guarantee).
        delta: δ ∈ [0, 1].
        mechanism: what was run, e.g. ``"laplace(sensitivity=1, scale=1)"``.
        covers: ``"mechanism"`` — the released output as the code runs (under the threat model in
            ``notes``); ``"ideal flow"`` — a continuous-time object the code approximates, *not* the
            released output; ``"none"`` — no guarantee.
        notes: assumptions, threat model, derivations.
        event: a ``dp_accounting.DpEvent`` describing the release exactly, for composition.
        parameters: the numbers behind the claim (noise scale, sensitivity, ...), JSON-able.
        float_safe: whether the floating-point output itself is protected (snapping).
        event_failure: the probability (over the mechanism's own draws, e.g. random directions whose
            sensitivity is bounded only with high probability) that ``event`` does not describe the
            release. It is part of ``delta``; composition (:meth:`PrivacyLedger.add_certificate`) adds
            it to δ next to the event, so it is never lost.
    """

    epsilon: Real
    delta: Real
    mechanism: str
    covers: str
    notes: str = ""
    event: Any = None
    parameters: dict = dataclasses.field(default_factory=dict)
    float_safe: bool = False
    event_failure: float = 0.0

    def __post_init__(self):
        try:
            eps = float(self.epsilon)
        except (TypeError, ValueError) as err:
            raise TypeError(f"epsilon must be a number, got {self.epsilon!r}") from err
        if math.isnan(eps) or eps < 0:
            raise ValueError(f"epsilon must be >= 0 (math.inf for none), got {self.epsilon}")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", float(self.delta))
        _validate.in_closed_interval("delta", self.delta, 0.0, 1.0)
        _validate.one_of("covers", self.covers, COVERS)
        object.__setattr__(self, "event_failure", float(self.event_failure))
        _validate.in_closed_interval("event_failure", self.event_failure, 0.0, self.delta)
        if self.covers == "none" and math.isfinite(self.epsilon):
            raise ValueError("a certificate with covers='none' must have epsilon=inf")

    def to_dp_event(self):
        """The matching ``dp_accounting`` event (raises if there is none)."""
        if self.event is None:
            raise ValueError(
                f"certificate for {self.mechanism} has no dp_accounting event; compose it with "
                "PrivacyLedger.add_certificate, which falls back to (epsilon, delta) composition"
            )
        return self.event

    def __str__(self) -> str:
        eps = "∞" if math.isinf(self.epsilon) else f"{self.epsilon:.6g}"
        head = f"({eps}, {self.delta:.3g})-DP for {self.mechanism} [covers: {self.covers}]"
        if self.covers == "ideal flow":
            head += " — NOT a guarantee of the released sample"
        return head + (f"\n  {self.notes}" if self.notes else "")


class Release(NamedTuple):
    """What a mechanism returns: the noisy value and the certificate of exactly that noise."""

    value: Any
    certificate: PrivacyCertificate
