# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The privacy layer: releases, certificates, composition and audits
#
# Every differential-privacy number in dpflows is a `PrivacyCertificate` that says **what it
# covers**: `"mechanism"` (the released output as the code runs), `"ideal flow"` (a continuous-time
# object the code only approximates: *not* a guarantee of anything released) or `"none"`. This
# notebook walks through the three things `dpflows.privacy` does with them:
#
# 1. a mechanism returns a `Release` = (output, certificate), and the certificate is computed from
#    the noise that was actually drawn;
# 2. a `PrivacyLedger` composes many releases; its ε(δ) is checked here against dp-accounting's
#    PLD and RDP accountants, called directly in the notebook;
# 3. an empirical audit (`privacy.audit_epsilon`, `privacy.audit_mu`) runs a mechanism many times on
#    two neighbouring inputs and lower-bounds its ε: below the claim for the correct noise, above
#    it for a deliberately under-noised mechanism.
#
# The keys below are fixed so that the notebook is reproducible. JAX's PRNG is not secret: a real
# release passes `key=None` (a key from OS entropy, `privacy.release_key()`) and never publishes it.
#
# Set `DPFLOWS_NOTEBOOK_SMALL=1` to run everything at a small size (the tests do).

# %%
import math
import os

import dp_accounting as dpa
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib
from IPython.display import Markdown, display

from dpflows import privacy, shk

SMALL = os.environ.get("DPFLOWS_NOTEBOOK_SMALL") == "1"
DELTA = 1e-5  # the δ at which every composed ε below is reported
SGD_STEPS = 200 if SMALL else 1000  # subsampled Gaussian releases in the ledger
COMPOSITIONS = [1, 10, 100, 300] if SMALL else [1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
AUDIT_TRIALS = 20_000 if SMALL else 200_000  # mechanism runs per neighbouring input
AUDIT_CLAIMS = [1.0, 2.0] if SMALL else [0.25, 0.5, 1.0, 2.0, 4.0]


def table(header, rows):
    """A list of rows as a Markdown table (rendered by the notebook)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    display(Markdown("\n".join(lines)))


def log_log(ax):
    """Log axes with plain tick labels (1, 10, 0.5) and no labelled minor ticks."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(mticker.NullFormatter())


# %% [markdown]
# ## 1. A mechanism returns a `Release`: the output and the certificate of exactly that noise
#
# `laplace_mechanism` adds Laplace noise of scale b = Δ₁/ε. By default it *snaps* (Mironov 2012):
# it samples in float64 from 52 random bits and rounds to a power-of-two grid, so the floating-point
# output is itself private; the certificate then states the slightly larger (ε′, δ′) that the float
# sampler attains (`privacy.snapping_guarantee`). The noise scale is computed once and the
# certificate's ε is derived from it, so the two cannot drift apart.

# %%
with jax.enable_x64(True):  # snapped releases sample in float64
    laplace_release = privacy.laplace_mechanism(jr.key(0), 41.7, sensitivity=1.0, epsilon=1.0)
    gaussian_release = privacy.gaussian_mechanism(
        jr.key(1), jnp.array([3.0, -1.0]), sensitivity=1.0, epsilon=1.0, delta=1e-6
    )
value, certificate = laplace_release  # a Release is a named tuple
print("released value (true answer 41.7):", float(value))
print(certificate)
print("\ncovers:", certificate.covers, "| float_safe:", certificate.float_safe)
print("noise scale b:", certificate.parameters["scale"], "| snapping grid:", certificate.parameters["grid"])
print("dp-accounting event (used for composition):", certificate.event)

# %% [markdown]
# The exponential mechanism (Gumbel-max) releases an index; the SHK sampler's certificate comes from
# `shk.dp_certificate`. Only the *exact* pure-reaction sampler released as one draw is covered as
# run (`covers="mechanism"`); with transport the number is an ideal-flow figure, and its `str` says
# it is not a guarantee of the released sample. The table lists what each certificate says, and how
# the ledger of §2 takes it in (`PrivacyLedger.add_certificate`): through its dp-accounting event
# when it has one, as a bounded-range (exponential) entry, as a stated (ε, δ) pair (snapped
# releases: their event describes the ideal real-valued mechanism, not the float terms), or not at
# all (an ideal-flow figure is refused).

# %%
votes = jnp.array([30.0, 42.0, 41.0, 10.0, 5.0])  # counts per candidate: one person changes one count by 1
em_release = privacy.exponential_mechanism(jr.key(2), votes, sensitivity=1.0, epsilon=1.0)
print("exponential mechanism picked candidate", int(em_release.value), "of", len(votes))

shk_covered = shk.dp_certificate(sensitivity=1.0, inverse_temperature=0.5, time=3.0)
shk_ideal = shk.dp_certificate(sensitivity=1.0, inverse_temperature=0.5, time=3.0, transport=1.0, transport_bound=0.5)
print(shk_ideal)


def ledger_entry(cert):
    """How PrivacyLedger.add_certificate records the certificate (or why it refuses it)."""
    try:
        return privacy.PrivacyLedger().add_certificate(cert).entries[0].kind
    except ValueError as err:
        return f"refused: {str(err).split(':')[0]}"


sources = {
    "`laplace_mechanism` (snapped)": laplace_release.certificate,
    "`gaussian_mechanism` (snapped)": gaussian_release.certificate,
    "`exponential_mechanism`": em_release.certificate,
    "`shk.dp_certificate`, exact reaction": shk_covered,
    "`shk.dp_certificate`, with transport": shk_ideal,
}
table(
    ["source", "mechanism", "ε", "δ", "covers", "float_safe", "ledger entry"],
    [
        (name, c.mechanism, f"{c.epsilon:.6g}", f"{c.delta:.4g}", c.covers, c.float_safe, ledger_entry(c))
        for name, c in sources.items()
    ],
)

# %% [markdown]
# Every method's private step has the same shape: `swf.private_release(key, data, ...)` returns
# `(release, certificate)` for the noisy sliced projections (every flow step and generator fitted to
# them is post-processing), `shk.private_sample` is the exact SHK mechanism whose certificate is
# `shk_covered` above, and `privacy.laplace_ldp` / `gaussian_ldp` return per-record local-DP
# releases.
#
# ## 2. Composing releases: the `PrivacyLedger` against dp-accounting
#
# A run makes many releases. The ledger records them and reports ε at a δ through dp-accounting's
# PLD accountant (tight) or its RDP accountant. Here it holds
#
# - 5 Gaussian releases, each (1, 10⁻⁶)-DP (noise multiplier σ/Δ₂ ≈ 4.22);
# - `SGD_STEPS` Poisson-subsampled Gaussian releases, q = 0.01, σ/Δ₂ = 1.1 (a DP-SGD-style loop);
# - 4 Laplace releases, each 0.5-DP;
# - 3 draws of the exact SHK sampler above, each ε(3) = 0.95 and ε-bounded range.
#
# The certificates come from the simulation path (`snap=False`), whose events describe the
# mechanism exactly; snapped releases would enter as their stated (ε′, δ′) by basic composition.
# Every entry covers the mechanism, so the composed ε covers the whole transcript of releases.

# %%
gauss_cert = privacy.gaussian_mechanism(
    jr.key(3), jnp.zeros(3), sensitivity=1.0, epsilon=1.0, delta=1e-6, snap=False
).certificate
laplace_cert = privacy.laplace_mechanism(jr.key(4), 0.0, sensitivity=1.0, epsilon=0.5, snap=False).certificate

ledger = (
    privacy.PrivacyLedger()
    .add_certificate(gauss_cert, count=5)
    .add_gaussian(1.1, count=SGD_STEPS, sampling_rate=0.01)
    .add_certificate(laplace_cert, count=4)
    .add_certificate(shk_covered, count=3)
)
for entry in ledger.to_dict()["entries"]:  # the JSON state a checkpoint stores
    print({k: v for k, v in entry.items() if v not in (None, "")})

# %% [markdown]
# The independent side: the same releases, built from dp-accounting's own primitives in this cell
# (not through the ledger). PLD: `privacy_loss_distribution.from_gaussian_mechanism` (with
# `sampling_prob` for the subsampled releases), `from_laplace_mechanism` and, since dp-accounting
# 0.6 has no exponential-mechanism event, the generic pure-DP `from_privacy_parameters(ε, 0)`; each
# self-composed `count` times on dp-accounting's default grid (10⁻⁴). RDP: `RdpAccountant` on
# Gaussian, Poisson-sampled Gaussian and Laplace events, and the SHK draws as `ZCDpEvent(ε²/8)`
# (an ε-bounded-range mechanism is ε²/8-zCDP, Cesar & Rogers 2021). When every release is pure
# (Laplace, SHK), basic composition Σε holds at every δ and both sides cap ε by it. The ledger's RDP
# is called with dp-accounting's default orders here; its own default (used by `"best"`) adds the
# integer orders 2..64 and 128..1024, which can only tighten.

# %%
parts = {  # name: (kind, parameter, count), read off the certificates' events
    "Gaussian (1, 1e-6) ×5": ("gaussian", gauss_cert.event.noise_multiplier, 5),
    f"subsampled Gaussian ×{SGD_STEPS}": ("subsampled", (1.1, 0.01), SGD_STEPS),
    "Laplace ε=0.5 ×4": ("laplace", laplace_cert.event.noise_multiplier, 4),
    "exact SHK draw ε=0.95 ×3": ("exponential", shk_covered.epsilon, 3),
}


def pure_cap(items):
    """Σ count·ε when every release is pure ε-DP (basic composition, valid at any δ), else ∞."""
    pure = {"laplace": lambda b: 1.0 / b, "exponential": lambda eps: eps}
    if any(kind not in pure for kind, _, _ in items):
        return math.inf
    return sum(count * pure[kind](p) for kind, p, count in items)


def dpa_pld_epsilon(items, delta):
    """ε(δ) from dp-accounting's privacy-loss distributions, composed here."""
    pld = None
    for kind, p, count in items:
        if kind == "gaussian":
            one = pld_lib.from_gaussian_mechanism(p, value_discretization_interval=1e-4)
        elif kind == "subsampled":
            one = pld_lib.from_gaussian_mechanism(p[0], sampling_prob=p[1], value_discretization_interval=1e-4)
        elif kind == "laplace":
            one = pld_lib.from_laplace_mechanism(p, value_discretization_interval=1e-4)
        else:  # pure ε-DP: the tightest PLD dp-accounting 0.6 offers for an exponential mechanism
            params = pld_common.DifferentialPrivacyParameters(p, 0.0)
            one = pld_lib.from_privacy_parameters(params, value_discretization_interval=1e-4)
        part = one.self_compose(count)
        pld = part if pld is None else pld.compose(part)
    return min(float(pld.get_epsilon_for_delta(delta)), pure_cap(items))


def dpa_rdp_epsilon(items, delta):
    """ε(δ) from dp-accounting's RdpAccountant (default orders)."""
    acc = rdp_lib.RdpAccountant()
    for kind, p, count in items:
        event = {
            "gaussian": lambda p: dpa.GaussianDpEvent(p),
            "subsampled": lambda p: dpa.PoissonSampledDpEvent(p[1], dpa.GaussianDpEvent(p[0])),
            "laplace": lambda p: dpa.LaplaceDpEvent(p),
            "exponential": lambda p: dpa.ZCDpEvent(p**2 / 8),
        }[kind](p)
        acc.compose(event, count)
    return min(float(acc.get_epsilon(delta)), pure_cap(items))


def one_part_ledger(kind, p, count):
    if kind == "gaussian":
        return privacy.PrivacyLedger().add_gaussian(p, count)
    if kind == "subsampled":
        return privacy.PrivacyLedger().add_gaussian(p[0], count, sampling_rate=p[1])
    if kind == "laplace":
        return privacy.PrivacyLedger().add_laplace(p, count)
    return privacy.PrivacyLedger().add_exponential(p, count)


rows, checks = [], []
for name, led, items in [
    *[(n, one_part_ledger(*item), [item]) for n, item in parts.items()],
    ("**all of the above**", ledger, list(parts.values())),
]:
    ours_pld = led.epsilon(DELTA, "pld")
    ours_rdp = led.epsilon(DELTA, "rdp", orders=rdp_lib.DEFAULT_RDP_ORDERS)
    theirs_pld, theirs_rdp = dpa_pld_epsilon(items, DELTA), dpa_rdp_epsilon(items, DELTA)
    checks.append((ours_pld, theirs_pld, ours_rdp, theirs_rdp))
    rows.append(
        (
            name,
            f"{ours_pld:.4f}",
            f"{theirs_pld:.4f}",
            f"{ours_rdp:.4f}",
            f"{theirs_rdp:.4f}",
            f"{led.epsilon(DELTA, 'best'):.4f}",
        )
    )
table(
    [
        f"releases (ε at δ = {DELTA:g}, covers: mechanism)",
        "ledger PLD",
        "dp-accounting PLD",
        "ledger RDP",
        "dp-accounting RDP",
        "ledger best",
    ],
    rows,
)
pld_gap = max(abs(a - b) / b for a, b, _, _ in checks)
rdp_gap = max(abs(c - d) / d for _, _, c, d in checks)
print(f"largest relative difference, ledger vs dp-accounting: PLD {pld_gap:.1e}, RDP {rdp_gap:.1e}")
exact5 = privacy.gaussian_epsilon(gauss_cert.event.noise_multiplier / math.sqrt(5), DELTA)
print(f"exact ε of the 5 Gaussians (one Gaussian of σ/√5, Balle & Wang): {exact5:.4f}")
assert pld_gap < 1e-4  # both PLDs are pessimistic on a 1e-4 grid of the privacy loss
assert rdp_gap < 1e-9  # the same accountant on the same events and orders

# %% [markdown]
# What to read off the table: the ledger's numbers are dp-accounting's numbers. The PLD columns agree
# to the discretisation grid (the ledger composes k Gaussians as one Gaussian of σ/√k, exactly; the
# independent side self-composes the discretised PLD), the RDP columns agree exactly. PLD is the
# tighter accountant on every Gaussian row. On the full ledger RDP ends lower: it prices each SHK
# draw as ε²/8-zCDP (bounded range), while dp-accounting's PLD can only treat it as generic pure
# ε-DP, a worst case that an exponential mechanism never attains. `"best"` reports the smaller of
# the two, both being valid upper bounds. Without the bounded-range structure, and with basic
# composition (adding the per-release ε's), the same releases cost more:

# %%
as_generic = (
    privacy.PrivacyLedger()
    .add_certificate(gauss_cert, count=5)
    .add_gaussian(1.1, count=SGD_STEPS, sampling_rate=0.01)
    .add_certificate(laplace_cert, count=4)
    .add_pure(shk_covered.epsilon, count=3)
)
print(
    f"all releases by RDP at δ = {DELTA:g}: SHK draws as bounded range (ε²/8-zCDP) {ledger.epsilon(DELTA, 'rdp'):.3f}, "
    f"as generic pure DP (ε²/2-zCDP) {as_generic.epsilon(DELTA, 'rdp'):.3f}"
)
without_sgd = (
    privacy.PrivacyLedger()
    .add_certificate(gauss_cert, count=5)
    .add_certificate(laplace_cert, count=4)
    .add_certificate(shk_covered, count=3)
)
basic_eps = 5 * gauss_cert.epsilon + 4 * laplace_cert.epsilon + 3 * shk_covered.epsilon
basic_delta = 5 * gauss_cert.delta
print(
    f"the Gaussian, Laplace and SHK releases alone at δ = {basic_delta:g}: basic composition ε = {basic_eps:.2f}, "
    f"ledger ε = {without_sgd.epsilon(basic_delta, 'best'):.2f}"
)

# %% [markdown]
# ### ε against the number of compositions
# Left: k Gaussian releases of σ/Δ₂ ≈ 4.22. Their exact ε is that of one Gaussian with σ/√k
# (`privacy.gaussian_epsilon`), and PLD reproduces it; RDP stays above. Right: k Poisson-subsampled
# Gaussian releases (q = 0.01, σ/Δ₂ = 1.1), where PLD is clearly tighter than RDP. The RDP curves
# are `privacy.rdp_epsilon`, pure JAX, evaluated for every k in one jitted `vmap`; the open circles
# are the ledger's RDP through dp-accounting on the same integer orders, which the JAX curve must
# pass through. Look for the PLD markers below the RDP curves, on the exact curve on the left.

# %%
sigma_g = gauss_cert.event.noise_multiplier
ks = np.unique(np.concatenate([np.geomspace(1, COMPOSITIONS[-1], 60).round(), COMPOSITIONS]).astype(np.int64))
with jax.enable_x64(True):  # rdp_epsilon matches dp-accounting to 1e-6 in float64
    rdp_curve = jax.jit(jax.vmap(privacy.rdp_epsilon, in_axes=(None, None, 0, None)))
    rdp_gauss = np.asarray(rdp_curve(sigma_g, 1.0, jnp.asarray(ks), DELTA))
    rdp_sub = np.asarray(rdp_curve(1.1, 0.01, jnp.asarray(ks), DELTA))

fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
for ax, sampling_rate, rdp_dense, title in [
    (axes[0], None, rdp_gauss, f"Gaussian, σ/Δ = {sigma_g:.2f}"),
    (axes[1], 0.01, rdp_sub, "Poisson-subsampled Gaussian, q = 0.01, σ/Δ = 1.1"),
]:
    sigma = sigma_g if sampling_rate is None else 1.1
    ledgers = [privacy.PrivacyLedger().add_gaussian(sigma, k, sampling_rate=sampling_rate) for k in COMPOSITIONS]
    pld = [led.epsilon(DELTA, "pld") for led in ledgers]
    rdp_dpa = [led.epsilon(DELTA, "rdp", orders=privacy.INTEGER_ORDERS) for led in ledgers]
    ax.plot(ks, rdp_dense, label="RDP (privacy.rdp_epsilon, JAX)")
    ax.plot(COMPOSITIONS, rdp_dpa, "o", mfc="none", color="C0", label="RDP (ledger → dp-accounting)")
    ax.plot(COMPOSITIONS, pld, "s", color="C3", label="PLD (ledger → dp-accounting)")
    if sampling_rate is None:
        exact = [privacy.gaussian_epsilon(sigma / math.sqrt(k), DELTA) for k in ks]
        ax.plot(ks, exact, "k--", lw=0.8, label="exact")
        pld_vs_exact = max(abs(e / exact[np.searchsorted(ks, k)] - 1) for k, e in zip(COMPOSITIONS, pld, strict=True))
        print(f"{title}: PLD vs exact, largest relative difference {pld_vs_exact:.1e}")
        assert pld_vs_exact < 1e-4
    log_log(ax)
    ax.xaxis.set_major_locator(mticker.LogLocator(base=10))  # 1, 10, 100, ...
    ax.set_xlabel("number of compositions k")
    ax.set_ylabel(f"ε at δ = {DELTA:g} (covers: mechanism)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    gap = max(abs(rdp_dense[np.searchsorted(ks, k)] / e - 1) for k, e in zip(COMPOSITIONS, rdp_dpa, strict=True))
    print(f"{title}: JAX RDP vs dp-accounting RDP, largest relative difference {gap:.1e}")
    assert gap < 1e-6
plt.show()

# %% [markdown]
# ## 3. Auditing a mechanism against its claim
# An audit runs the mechanism `AUDIT_TRIALS` times on each of two neighbouring inputs (here the
# query answers 0 and 1, sensitivity 1), counts how often the output lands in an event
# S = {y > t}, and turns the two frequencies into a lower bound on ε with 99.9 % Clopper–Pearson
# intervals (α = 10⁻³). A correct ε-DP mechanism has ε_lo ≤ ε with probability ≥ 0.999; a bound
# above the claim refutes it. For Laplace noise the best event is known a priori, t = Δ = 1, where
# the likelihood ratio saturates at e^ε. The audited number is a lower bound on the ε of the
# mechanism as run (`snap=False` here: the audit is about the noise scale).


# %%
def laplace_claiming(claim, noise_factor=1.0):
    """A mechanism that claims ε = ``claim`` but adds ``noise_factor`` times the noise it needs."""

    def mechanism(key, value):
        return privacy.laplace_mechanism(key, value, sensitivity=1.0, epsilon=claim / noise_factor, snap=False).value

    return mechanism


audits = {}
for i, claim in enumerate(AUDIT_CLAIMS):
    for label, factor in [("correct noise", 1.0), ("half the noise", 0.5)]:
        audits[claim, label] = privacy.audit_epsilon(
            laplace_claiming(claim, factor),
            0.0,
            1.0,
            key=jr.fold_in(jr.key(5), i),  # the same key for both variants of a claim
            num_trials=AUDIT_TRIALS,
            threshold=1.0,
            name=f"Laplace claiming ε={claim:g}, {label}",
        )

print(audits[1.0, "correct noise"].check(1.0).describe(1.0))  # .check raises if the bound exceeds the claim
try:
    audits[1.0, "half the noise"].check(1.0)
except privacy.PrivacyAuditError as err:
    print("\ncaught:", err)

# %% [markdown]
# Across claims: every correctly noised mechanism audits just below its claimed ε (the diagonal),
# and every mechanism with half the noise it needs audits above it, at about twice the claim.

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
for label, marker in [("correct noise", "o"), ("half the noise", "x")]:
    ax.plot(AUDIT_CLAIMS, [audits[c, label].lower for c in AUDIT_CLAIMS], marker, ms=8, label=label)
grid = np.array([0.8 * min(AUDIT_CLAIMS), 1.25 * max(AUDIT_CLAIMS)])
ax.plot(grid, grid, "k--", lw=0.8, label="audited = claimed")
log_log(ax)
ax.set_xticks(AUDIT_CLAIMS)
ax.set_yticks([2.0**j for j in range(-3, 4) if grid[0] <= 2.0**j <= 2.2 * max(AUDIT_CLAIMS)])
ax.set_xlabel("claimed ε of the Laplace mechanism")
ax.set_ylabel("audited lower bound ε_lo (99.9 %)")
ax.legend(fontsize=8)
plt.show()
table(
    ["claimed ε", "ε_lo, correct noise", "ε_lo, half the noise", "half the noise caught"],
    [
        (
            f"{c:g}",
            f"{audits[c, 'correct noise'].lower:.3f}",
            f"{audits[c, 'half the noise'].lower:.3f}",
            audits[c, "half the noise"].lower > c,
        )
        for c in AUDIT_CLAIMS
    ],
)
assert all(audits[c, "correct noise"].lower <= c < audits[c, "half the noise"].lower for c in AUDIT_CLAIMS)

# %% [markdown]
# For a Gaussian mechanism a threshold (ε, δ) audit cannot reach events of probability ~δ, so audit
# its Gaussian-DP parameter μ = Δ/σ instead (`audit_mu`, Nasr et al. 2023): μ_lo = Φ⁻¹(TPR_lo) −
# Φ⁻¹(FPR_hi) for the event {y > ½}, the midpoint of the two inputs. The (1, 10⁻⁵) analytic
# Gaussian mechanism adds σ ≈ 3.73, which makes it exactly μ-GDP with μ = Δ/σ ≈ 0.268: that is the
# claim audited. The same mechanism with half of σ is caught.


# %%
def gaussian_claiming(noise_factor=1.0):
    """The (1, 1e-5) Gaussian mechanism with its noise scaled by ``noise_factor``."""

    def mechanism(key, value):
        out = privacy.gaussian_mechanism(key, value, sensitivity=1.0, epsilon=1.0, delta=1e-5, snap=False).value
        return value + noise_factor * (out - value)  # noise_factor < 1: less noise than certified

    return mechanism


mu_claim = 1.0 / privacy.gaussian_scale(1.0, 1.0, 1e-5)
mu_audits = {}
for label, factor in [("correct noise", 1.0), ("half the noise", 0.5)]:
    mu_audits[label] = result = privacy.audit_mu(
        gaussian_claiming(factor),
        0.0,
        1.0,
        key=jr.key(6),
        num_trials=AUDIT_TRIALS,
        threshold=0.5,
        name=f"Gaussian (1, 1e-5), {label}",
    )
    print(result.describe(mu_claim), "->", "caught" if result.lower > mu_claim else "consistent with the claim")
assert mu_audits["correct noise"].lower <= mu_claim < mu_audits["half the noise"].lower

# %% [markdown]
# An audit is evidence, not proof: passing says only that no violation was found at this sample size.
# The SHK notebook audits the exact SHK sampler the same way, and `tests/privacy/` audits every
# `"mechanism"` release with planted bugs that must be caught.
