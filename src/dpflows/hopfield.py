"""Sinkhorn dense associative memory over weighted point clouds, retrieved by an SHK flow (METHODS.md §2).

Memories are K weighted point clouds ξ_k = Σ_j b^k_j δ_{y^k_j}; a query is one too, μ = Σ_i a_i δ_{x_i}.
The energy is the modern-Hopfield log-sum-exp with the debiased Sinkhorn divergence in place of the
squared distance (cost c = ½‖x − y‖²):

    E(μ) = −(1/β) log Σ_k exp(−β S_ε(μ, ξ_k)),   p_k(μ) = softmax_k(−β S_ε(μ, ξ_k)).

Its first variation is ψ(x) = Σ_k p_k f_k(x) − s(x), with f_k the μ-side potential of OT_ε(μ, ξ_k)
and s the potential of OT_ε(μ, μ); ∇ψ(x) = T_self(x) − Σ_k p_k T_k(x), T the entropic barycentric
maps. One retrieval step (the SHK flow discretised, §2c) moves the points and reweights them:

    x_i ← x_i + τ (Σ_k p_k T_k(x_i) − T_self(x_i)),      a_i ← a_i e^{−η(ψ_i − ⟨a, ψ⟩)} / Z.

Reconstructed, not quoted (the paper's body was not available): the energy has no extra regulariser,
the self term is kept (``self_term=False`` replaces T_self by the identity, the small-ε form
x ← Σ_k p_k T_k(x)), step sizes are τ = ``step_size`` and η = ``weight_step``, and retrieval stops
when |E_t − E_{t−1}| < ``tol``. The retrieved index is argmin_k S_ε(μ_T, ξ_k).

All K divergences are solved in one batched call, :func:`dpflows.ot.sinkhorn_divergences` (dpflows'
own lockstep Sinkhorn vmapped over the memories: every lane stops on its own error and converged
lanes are frozen; OT_ε(μ, μ) solved once for the K divergences), warm-started from the previous
step's potentials kept in ``Particles.aux``. The weight step is :func:`dpflows.particles.reweight`.
Retrieval is :func:`dpflows.run` with the flow's :meth:`SinkhornHopfield.terminate` (the energy
tolerance), so a ``sweep`` over β, ε, step sizes or tolerances freezes each member on its own. Ragged
memories are padded with zero-weight points, which act exactly like absent points.

:class:`EuclideanHopfield` is the baseline (Ramsauer et al. 2020) on the clouds flattened in their
stored order: it needs equal sizes and sees neither weights nor permutations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import logsumexp

from . import _validate, ot
from ._typing import Array, Bool, Float, Info, Int, PRNGKeyArray
from .flow import AbstractFlow, FlowWarning, Trace, run
from .particles import Particles, reweight

__all__ = ["EuclideanHopfield", "RetrievalReport", "SinkhornHopfield", "pad_patterns"]

_COST = "sqeuclidean"


# ---------------------------------------------------------------------------------- patterns
def pad_patterns(patterns: Any, pattern_weights: Any = None, *, dtype: Any = None) -> tuple[Array, Array]:
    """Stack K clouds of possibly different sizes into ``(K, m, d)`` points and ``(K, m)`` weights.

    Missing points are padded with the cloud's weighted mean and weight 0 (zero-weight points are
    exactly absent in every solve). ``pattern_weights`` is None (uniform over each cloud's real
    points), a ``(K, m)`` array, or a sequence of ``(m_k,)`` arrays; each must sum to one.

    Raises:
        ValueError: empty memory or cloud, mismatched dimensions, NaN/inf, bad weights (named).
    """
    if isinstance(patterns, Sequence) and not isinstance(patterns, str | bytes):
        clouds = [_validate.floating_array(f"patterns[{k}]", p) for k, p in enumerate(patterns)]
    else:
        arr = _validate.floating_array("patterns", patterns)
        if arr.ndim != 3:
            raise ValueError(f"patterns must have shape (K, m, d) or be a list of (m_k, d) arrays, got {arr.shape}")
        clouds = list(arr)
    if not clouds:
        raise ValueError("patterns must hold at least one cloud")
    dtype = dtype or jnp.result_type(*clouds)
    d = clouds[0].shape[-1] if clouds[0].ndim == 2 else None
    for k, c in enumerate(clouds):
        if c.ndim != 2 or c.shape[1] != d:
            raise ValueError(f"patterns[{k}] must have shape (m_k, {d}), got {c.shape}")
        if c.shape[0] == 0:
            raise ValueError(f"patterns[{k}] must hold at least one point, got shape {c.shape}")
    sizes = [c.shape[0] for c in clouds]
    m = max(sizes)
    if pattern_weights is None:
        weights = [jnp.full((s,), 1.0 / s, dtype) for s in sizes]
    elif isinstance(pattern_weights, Sequence):
        if len(pattern_weights) != len(clouds):
            raise ValueError(f"pattern_weights must hold {len(clouds)} weight vectors, got {len(pattern_weights)}")
        weights = [_validate.floating_array(f"pattern_weights[{k}]", w) for k, w in enumerate(pattern_weights)]
    else:
        w = _validate.floating_array("pattern_weights", pattern_weights)
        if w.ndim != 2 or w.shape[0] != len(clouds):
            raise ValueError(f"pattern_weights must have shape ({len(clouds)}, m), got {w.shape}")
        weights = list(w)
    pts, wts = [], []
    for k, (c, w) in enumerate(zip(clouds, weights, strict=True)):
        c = _validate.finite(f"patterns[{k}]", c.astype(dtype))
        w = ot.check_weights(w, c.shape[0], name=f"pattern_weights[{k}]", dtype=dtype)
        centre = w @ c
        pts.append(jnp.concatenate([c, jnp.broadcast_to(centre, (m - c.shape[0], d))]))
        wts.append(jnp.concatenate([w, jnp.zeros((m - c.shape[0],), dtype)]))
    return jnp.stack(pts), jnp.stack(wts)


# ---------------------------------------------------------------------------------- the carry
class _Carry(eqx.Module):
    """What a retrieval step hands to the next (``Particles.aux``): warm starts and the energy record.

    ``f``, ``g``, ``s``, ``g_yy``: the last step's potentials (:attr:`ot.BatchedDivergenceResult.potentials`).
    ``energy``: E at the state the last step started from; ``previous``: the step before (∞ at the start).
    """

    f: Array  # (K, n)
    g: Array  # (K, m)
    s: Array  # (n,)
    g_yy: Array  # (K, m)
    energy: Array  # ()
    previous: Array  # ()


# -------------------------------------------------------------------------------- the memory
class SinkhornHopfield(AbstractFlow):
    """Associative memory of weighted point clouds, retrieved by the SHK flow of a Sinkhorn energy.

    E(μ) = −(1/β) log Σ_k exp(−β S_ε(μ, ξ_k)) with S_ε the debiased Sinkhorn divergence for
    c = ½‖x − y‖². One :meth:`step` (module docstring):

        x_i ← x_i + τ (Σ_k p_k T_k(x_i) − T_self(x_i)),   logw_i ← logw_i − η (ψ_i − ⟨a, ψ⟩), renormalised,

    so the points follow −∇ψ (the Wasserstein gradient of E, preconditioned by 1/a_i) and the
    weights the Fisher–Rao mirror step of E on the simplex (:func:`dpflows.particles.reweight`). A
    stored pattern with p_k ≈ 1 is a fixed point (T_k = T_self and ψ = const when μ = ξ_k).
    ``info``: ``energy`` and ``divergences`` (K,) at the state the step starts from, ``converged``
    (all Sinkhorn solves), ``num_iters``.

    Stopping rule (:meth:`terminate`, honoured by :func:`dpflows.run` and :func:`dpflows.sweep`
    per member): the step that finds |E_t − E_{t−1}| < ``retrieval_tol`` (or a non-finite E_t) does
    not move, and the run stops there, so the retrieved cloud is μ_t. ``retrieval_tol = 0`` (the
    default) never stops early.

    Args:
        patterns: (K, m, d) array, or a list of (m_k, d) clouds of different sizes (padded).
        pattern_weights: None (uniform), (K, m), or a list of (m_k,) weight vectors summing to 1.
        epsilon: entropic ε > 0, in units of ½‖x − y‖² (≈ 0.05–0.1 × typical squared spacing).
        beta: inverse temperature β > 0; retrieval is sharp when β × (S_ε gap) ≫ log K.
        step_size: τ > 0 of the transport step (τ = 1 is the barycentric fixed-point iteration).
        weight_step: η ≥ 0 of the multiplicative weight step (0 keeps the query's weights). Default
            ε/10: moving mass between points has curvature ~1/ε in S_ε (the entropic smoothing of
            W₂'s kink), so η must shrink with ε; measured, η = ε/10 and 3ε/10 descend monotonically for
            ε ∈ [0.03, 0.5] while η = ε oscillates (tests/hopfield).
        self_term: keep T_self (default, the exact gradient of E); ``False`` uses the identity,
            the small-ε modern-Hopfield form (no longer an exact descent of E).
        max_iterations: Sinkhorn iterations per solve (static: the loop's budget).
        threshold: Sinkhorn L1 marginal tolerance (an array leaf: sweepable without a recompile).
        check_every: Sinkhorn iterations between convergence checks (static).
        retrieval_tol: the energy tolerance of the stopping rule (≥ 0; an array leaf).
            :meth:`retrieve` sets it from its ``tol``.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> base = jr.normal(jr.key(0), (12, 2))
        >>> memory = SinkhornHopfield(jnp.stack([base + 3.0, base - 3.0]), epsilon=0.1, beta=10.0)
        >>> query = base[::-1] - 3.0 + 0.3 * jr.normal(jr.key(1), (12, 2))  # reordered, noisy
        >>> retrieved, trace = memory.retrieve(query, num_steps=30)
        >>> int(memory.classify(retrieved)), bool(trace["energy"][-1] <= trace["energy"][0])
        (1, True)
    """

    patterns: Float[Array, "K m d"]
    pattern_weights: Float[Array, "K m"]
    epsilon: Float[Array, ...]
    beta: Float[Array, ...]
    step_size: Float[Array, ...]
    weight_step: Float[Array, ...]
    threshold: Float[Array, ...]
    retrieval_tol: Float[Array, ...]
    self_term: bool = eqx.field(static=True, default=True)
    max_iterations: int = eqx.field(static=True, default=1000)
    check_every: int = eqx.field(static=True, default=10)

    def __init__(
        self,
        patterns: Any,
        pattern_weights: Any = None,
        *,
        epsilon: Any,
        beta: Any,
        step_size: Any = 1.0,
        weight_step: Any = None,
        self_term: bool = True,
        max_iterations: int = 1000,
        threshold: Any = 1e-3,
        check_every: int = 10,
        retrieval_tol: Any = 0.0,
    ):
        """See the class docstring."""
        self.patterns, self.pattern_weights = pad_patterns(patterns, pattern_weights)
        dtype = self.patterns.dtype
        _validate.positive("epsilon", epsilon)  # before it is used for the default weight step
        if weight_step is None:
            weight_step = 0.1 * jnp.asarray(epsilon)
        for name, value, zero in (
            ("epsilon", epsilon, False),
            ("beta", beta, False),
            ("step_size", step_size, False),
            ("weight_step", weight_step, True),
            ("threshold", threshold, False),
            ("retrieval_tol", retrieval_tol, True),
        ):
            _validate.positive(name, value, allow_zero=zero)
            setattr(self, name, jnp.asarray(value, dtype))
        if not isinstance(self_term, bool):
            raise TypeError(f"self_term must be a bool, got {self_term!r}")
        self.self_term = self_term
        self.max_iterations = _validate.positive_int("max_iterations", max_iterations)
        self.check_every = _validate.positive_int("check_every", check_every)

    # ------------------------------------------------------------------------------ shapes
    @property
    def num_patterns(self) -> int:
        """K, the number of stored clouds."""
        return self.patterns.shape[0]

    @property
    def dim(self) -> int:
        """d, the ambient dimension."""
        return self.patterns.shape[-1]

    def _zero_aux(self, n: int, dtype) -> _Carry:
        k, m = self.patterns.shape[:2]
        inf = jnp.asarray(jnp.inf, dtype)
        return _Carry(
            jnp.zeros((k, n), dtype),
            jnp.zeros((k, m), dtype),
            jnp.zeros((n,), dtype),
            jnp.zeros((k, m), dtype),
            inf,
            inf,
        )

    def init(self, x: Any, logw: Any = None) -> Particles:
        """A query cloud at ``x`` (n, d) with zero warm-start potentials in ``aux``."""
        state = Particles.create(x, logw)
        if state.x.ndim != 2 or state.x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}) to match the patterns, got {state.x.shape}")
        return Particles(state.x, state.logw, state.v, state.t, self._zero_aux(state.x.shape[0], state.x.dtype))

    def query(self, query: Any, weights: Any = None) -> Particles:
        """A query as :class:`Particles`: ``query`` is (n, d) points (+ optional ``weights``) or Particles.

        A Particles keeps its warm-start potentials if they are this memory's (same K, m, n); its
        energy record is reset, so a new retrieval never stops before its first move.

        Raises:
            ValueError: wrong shape, NaN/inf, empty cloud, weights that are negative or do not sum to 1.
        """
        if isinstance(query, Particles):
            if weights is not None:
                raise ValueError("weights must be None when query is a Particles (its weights are used)")
            state = query
            if state.x.ndim != 2 or state.x.shape[1] != self.dim:
                raise ValueError(f"query must have shape (n, {self.dim}), got {state.x.shape}")
            # Keep warm starts only if they are this memory's (same K, m, n); otherwise start cold.
            aux, zeros = state.aux, self._zero_aux(state.x.shape[0], state.x.dtype)
            shapes = jax.tree_util.tree_map(lambda v: getattr(v, "shape", None), (aux, zeros))
            if jax.tree_util.tree_structure(aux) != jax.tree_util.tree_structure(zeros) or shapes[0] != shapes[1]:
                aux = zeros
            else:
                aux = eqx.tree_at(lambda c: (c.energy, c.previous), aux, (zeros.energy, zeros.previous))
            return Particles(state.x, state.logw, state.v, state.t, aux)
        x = _validate.floating_array("query", query)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"query must have shape (n, {self.dim}) to match the patterns, got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("query must hold at least one point")
        x = _validate.finite("query", x)
        if weights is None:
            return self.init(x)
        a = ot.check_weights(weights, x.shape[0], name="weights", dtype=x.dtype)
        logw = jnp.where(a > 0, jnp.log(jnp.where(a > 0, a, 1.0)), -jnp.inf)
        return self.init(x, logw)

    # ---------------------------------------------------------------------------- solving
    def _solve(self, state: Particles) -> ot.BatchedDivergenceResult:
        """All K divergences S_ε(μ, ξ_k) in one batched lockstep solve, warm-started from ``aux``."""
        dtype = state.x.dtype
        aux = state.aux
        init = tuple(jax.lax.stop_gradient(p).astype(dtype) for p in (aux.f, aux.g, aux.s, aux.g_yy))
        return ot.sinkhorn_divergences(
            state.x,
            self.patterns.astype(dtype),
            state.weights,
            self.pattern_weights.astype(dtype),
            epsilon=self.epsilon.astype(dtype),
            max_iterations=self.max_iterations,
            threshold=self.threshold.astype(dtype),
            check_every=self.check_every,
            init=init,
            warn=False,
            check=False,  # inside the step: a non-finite state is reported by run, not raised
        )

    def _energy(self, divergences: Array) -> Array:
        beta = self.beta.astype(divergences.dtype)
        return -logsumexp(-beta * divergences) / beta + 0.0  # + 0.0: no "-0." at an exact fixed point

    def divergences(self, query: Any, weights: Any = None) -> Float[Array, " K"]:
        """S_ε(μ, ξ_k) for every stored pattern, shape (K,)."""
        return self._solve(self.query(query, weights)).value

    def energy(self, query: Any, weights: Any = None) -> Float[Array, ""]:
        """E(μ) = −(1/β) log Σ_k exp(−β S_ε(μ, ξ_k)); differentiable in the points and weights."""
        state = self.query(query, weights)
        return self._energy(self._solve(state).raw)

    def responsibilities(self, query: Any, weights: Any = None) -> Float[Array, " K"]:
        """p_k(μ) = softmax_k(−β S_ε(μ, ξ_k))."""
        s = self.divergences(query, weights)
        return jax.nn.softmax(-self.beta.astype(s.dtype) * s)

    def classify(self, query: Any, weights: Any = None) -> Int[Array, ""]:
        """argmin_k S_ε(μ, ξ_k): the index of the nearest stored pattern (no flow is run)."""
        return jnp.argmin(self.divergences(query, weights))

    def margin(self, query: Any, weights: Any = None) -> Float[Array, ""]:
        """S_ε to the second-nearest pattern minus S_ε to the nearest (≥ 0; 0 is a tie).

        β × margin ≫ log K means the responsibilities are one-hot and retrieval is decided.
        """
        s = self.divergences(query, weights)
        if s.shape[0] < 2:
            return jnp.asarray(jnp.inf, s.dtype)
        lo = jnp.sort(s)
        return lo[1] - lo[0]

    def pattern_divergences(self) -> Float[Array, "K K"]:
        """S_ε(ξ_k, ξ_l) between every pair of stored patterns (zero diagonal).

        The K self terms OT_ε(ξ_k, ξ_k) are solved once and shared by every row
        (``self_x``/``self_ys`` of :func:`ot.sinkhorn_divergences`); the K² cross terms one row at a time.
        """
        return _pattern_divergences(self)

    def basin_radii(self) -> Float[Array, " K"]:
        """r_k = ¼ min_{l≠k} S_ε(ξ_k, ξ_l): half the way to the nearest competitor in √S units."""
        s = self.pattern_divergences()
        k = s.shape[0]
        off = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, s)
        return 0.25 * jnp.min(off, axis=1)

    # ------------------------------------------------------------------------------- flow
    def _move(self, state: Particles, sol: ot.BatchedDivergenceResult) -> Particles:
        """Transport step of the points, then the centred multiplicative step of the weights."""
        dtype = state.x.dtype
        p = jax.nn.softmax(-self.beta.astype(dtype) * sol.value)
        target = jnp.tensordot(p, sol.maps(), axes=1)
        base = sol.self_map() if self.self_term else state.x
        x = state.x + self.step_size.astype(dtype) * (target - base)
        psi = p @ sol.f_xy - (sol.f_xx if self.self_term else 0.0)
        logw = reweight(state, psi, self.weight_step.astype(dtype)).logw
        t = state.t + self.step_size.astype(state.t.dtype)
        return Particles(x, logw, state.v, t, state.aux)

    def _stops(self, energy: Array, previous: Array) -> Array:
        """|E_t − E_{t−1}| < retrieval_tol, or a non-finite E_t: the retrieval has ended."""
        tol = self.retrieval_tol.astype(energy.dtype)
        return (jnp.abs(energy - previous) < tol) | ~jnp.isfinite(energy)

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One deterministic retrieval step (the key is unused): transport, then reweighting.

        A step whose energy meets the stopping rule (class docstring) returns the state unmoved,
        with only its energy record updated.
        """
        del key
        sol = self._solve(state)
        energy = self._energy(sol.value)
        previous = state.aux.energy.astype(energy.dtype)
        moved = self._move(state, sol)
        moved = Particles(moved.x, moved.logw, moved.v, moved.t, _Carry(*sol.potentials, energy, previous))
        kept = Particles(
            state.x,
            state.logw,
            state.v,
            state.t,
            eqx.tree_at(lambda c: (c.energy, c.previous), state.aux, (energy, previous)),
        )
        stop = self._stops(energy, previous)
        new = jax.tree_util.tree_map(lambda old, upd: jnp.where(stop, old, upd), kept, moved)
        info = {
            "energy": energy,
            "divergences": sol.value,
            "converged": jnp.all(sol.converged),
            "num_iters": sol.num_iters,
        }
        return new, info

    def terminate(self, state: Particles, info: Info) -> Bool[Array, ""]:
        """The stopping rule, on a step's ``(new_state, info)``: |E_t − E_{t−1}| < ``retrieval_tol``."""
        return self._stops(info["energy"], state.aux.previous.astype(info["energy"].dtype))

    def retrieve(
        self, query: Any, weights: Any = None, *, num_steps: int = 100, tol: Any = 1e-6, warn: bool = True
    ) -> tuple[Particles, Trace]:
        """Run the flow from ``query`` until |E_t − E_{t−1}| < ``tol`` or ``num_steps`` moves.

        :func:`dpflows.run` of this memory with ``retrieval_tol = tol`` (its :meth:`terminate`
        stops the loop), plus one evaluation of the final state. jit- and vmap-able (many queries:
        :meth:`retrieve_many`, or ``jax.vmap(lambda q: memory.retrieve(q))(queries)``; under vmap
        every query runs until the last one stops, stopped ones frozen).

        Args:
            query: the query's points (n, d) or a Particles (see :meth:`query`).
            weights: the query's weights (uniform if None).
            num_steps: at most this many moves.
            tol: energy tolerance ≥ 0 (0 runs all ``num_steps``).
            warn: emit :class:`dpflows.ot.ConvergenceWarning` when a concrete retrieval had
                unconverged Sinkhorn solves (``trace.ok`` is then False either way).

        Returns:
            The retrieved cloud and a :class:`~dpflows.Trace` over the ``num_steps + 1`` evaluated
            states μ_0, …, μ_T: ``energy``, ``divergences`` (·, K), ``converged`` (Sinkhorn),
            ``num_iters`` and ``active`` (False for entries after the stop, which repeat the last
            state's values). ``trace.ok``: finite result and every Sinkhorn solve converged.
        """
        num_steps = _validate.positive_int("num_steps", num_steps)
        _validate.positive("tol", tol, allow_zero=True)
        state = self.query(query, weights)
        flow = eqx.tree_at(lambda m: m.retrieval_tol, self, jnp.asarray(tol, self.retrieval_tol.dtype))
        final, trace = _retrieve(flow, state, num_steps)
        if warn:
            _warn_unconverged(self, trace, "retrieve")
        return final, trace

    def retrieve_many(
        self,
        queries: Any,
        weights: Any = None,
        *,
        num_steps: int = 100,
        tol: Any = 1e-6,
        batch_size: int | None = None,
        warn: bool = True,
    ) -> tuple[Particles, Trace]:
        """:meth:`retrieve` for a stack of queries (B, n, d) (and weights (B, n)), as one compiled program.

        Queries run ``batch_size`` at a time (``jax.lax.map``; each group vmapped in lockstep).
        Default: one at a time on CPU, all at once on an accelerator. Measured on a 2-core CPU (64
        queries, K = 32, n = 64, d = 8, 3 steps): one at a time 0.89 s, groups of 4 or 16 1.27 s,
        a plain ``jax.vmap`` 1.89 s — XLA:CPU runs the batched while-loops slower than a loop of them.
        ``warn`` as :meth:`retrieve` (one warning for the batch).

        Returns:
            Particles and Trace with a leading query axis.
        """
        xs = _validate.floating_array("queries", queries)
        if xs.ndim != 3 or xs.shape[-1] != self.dim or min(xs.shape[:2]) == 0:
            raise ValueError(f"queries must have shape (B, n, {self.dim}) with B, n >= 1, got {xs.shape}")
        if weights is not None:
            weights = _validate.floating_array("weights", weights).astype(xs.dtype)
            if weights.shape != xs.shape[:2]:
                raise ValueError(f"weights must have shape {xs.shape[:2]} to match queries, got {weights.shape}")
            for i, w in enumerate(weights if _validate.is_concrete(weights) else ()):
                ot.check_weights(w, xs.shape[1], name=f"weights[{i}]", dtype=xs.dtype)
        if batch_size is None:
            batch_size = 1 if jax.default_backend() == "cpu" else xs.shape[0]
        batch_size = min(_validate.positive_int("batch_size", batch_size), xs.shape[0])
        num_steps = _validate.positive_int("num_steps", num_steps)
        _validate.positive("tol", tol, allow_zero=True)
        tol = jnp.asarray(tol, self.retrieval_tol.dtype)
        final, trace = _retrieve_many(self, xs, weights, num_steps, tol, batch_size)
        if warn:
            _warn_unconverged(self, trace, "retrieve_many")
        return final, trace

    def report(self, trace: Trace, radii: Any = None, *, energy_min: Any = None) -> RetrievalReport:
        """Summarise one retrieval trace (host-side): index, margin, steps, monotonicity, rates, basin.

        Args:
            trace: the trace of one :meth:`retrieve` (index a vmapped batch first).
            radii: optional basin radii (K,) (e.g. :meth:`basin_radii`); the report then says
                whether S_ε(μ_t, ξ_{k_0}) stayed within r_{k_0} for the start's nearest k_0.
            energy_min: optional E_min, the energy of the minimiser the retrieval converges to
                (e.g. ``energy(pattern)`` for a stored pattern with p_k ≈ 1); the rates are then
                fitted to E_t − E_min, else to the decrements E_t − E_{t+1} (see
                :class:`RetrievalReport`).
        """
        return RetrievalReport.from_trace(trace, radii, energy_min=energy_min)


@eqx.filter_jit
def _unused_key() -> PRNGKeyArray:
    """The key handed to ``run`` for a deterministic flow (its steps never read it)."""
    return jr.wrap_key_data(jnp.zeros((2,), jnp.uint32))


def _retrieve(memory: SinkhornHopfield, state: Particles, num_steps: int) -> tuple[Particles, Trace]:
    """``run`` to the stop, then the final state's evaluation as entry ``num_steps`` of the trace."""
    # The flow is deterministic: the key only satisfies run's signature.
    with warnings.catch_warnings():  # retrieve warns itself, with counts, when asked to (warn=True)
        warnings.simplefilter("ignore", FlowWarning)
        final, ran = run(memory, state, _unused_key(), num_steps, throw=False)
    info = dict(ran.info)
    last = {name: v[-1] for name, v in info.items()}
    stopped = memory.terminate(final, last)  # the last step taken met the stopping rule
    sol = memory._solve(final)
    evaluated = {
        "energy": memory._energy(sol.value),
        "divergences": sol.value,
        "converged": jnp.all(sol.converged),
        "num_iters": sol.num_iters,
    }
    # After a stop the extra entry repeats the last evaluated state's values (``active`` False).
    row = {name: jnp.where(stopped, last[name], evaluated[name]) for name in evaluated}
    row["active"] = ~stopped
    info = {name: jnp.concatenate([info[name], row[name][None]]) for name in row}
    ok = jnp.all(jnp.isfinite(final.x)) & jnp.all(~jnp.isnan(final.logw)) & jnp.all(info["converged"])
    steps = jnp.arange(num_steps + 1, dtype=jnp.int32)
    return final, Trace(info=info, states=None, record_steps=steps, ok=ok)


@eqx.filter_jit
def _retrieve_many(memory: SinkhornHopfield, xs, ws, num_steps: int, tol: Array, batch_size: int):
    def one(args):
        x, w = args
        return memory.retrieve(x, w, num_steps=num_steps, tol=tol, warn=False)

    ws_in = jnp.full(xs.shape[:2], 1.0 / xs.shape[1], xs.dtype) if ws is None else ws
    return jax.lax.map(one, (xs, ws_in), batch_size=batch_size)


def _warn_unconverged(memory: SinkhornHopfield, trace: Trace, what: str) -> None:
    """Say why ``trace.ok`` is False when Sinkhorn failed, and what to change (host-side, concrete only)."""
    if not _validate.is_concrete(trace.ok) or bool(np.all(np.asarray(trace.ok))):
        return
    active = np.asarray(trace["active"])
    bad = active & ~np.asarray(trace["converged"])
    if not bad.any():
        return  # not a Sinkhorn failure (a non-finite state): the trace's numbers say so
    where = f"{int(bad.sum())} of {int(active.sum())} evaluated steps"
    if active.ndim == 2:
        where += f" ({int(bad.any(axis=1).sum())} of {active.shape[0]} queries)"
    eps, threshold = (float(np.max(np.asarray(v))) for v in (memory.epsilon, memory.threshold))
    warnings.warn(
        f"SinkhornHopfield.{what}: Sinkhorn did not converge in {where} at epsilon={eps:.3g}, "
        f"threshold={threshold:.3g}, max_iterations={memory.max_iterations}; trace.ok is False "
        "and the moves used inexact potentials. "
        "Use a larger epsilon, more max_iterations or a looser threshold.",
        ot.ConvergenceWarning,
        stacklevel=3,
    )


@eqx.filter_jit
def _pattern_divergences(memory: SinkhornHopfield) -> Array:
    ys, bs = memory.patterns, memory.pattern_weights
    k = ys.shape[0]
    dtype = ys.dtype
    kw = dict(
        epsilon=memory.epsilon.astype(dtype),
        max_iterations=memory.max_iterations,
        threshold=memory.threshold.astype(dtype),
        check_every=memory.check_every,
        warn=False,
        check=False,
    )
    own = jax.vmap(lambda y, b: ot.self_transport(y, b, **kw))(ys, bs)  # K self terms, solved once

    def row(i):
        mine = jax.tree_util.tree_map(lambda v: v[i], own)
        return ot.sinkhorn_divergences(ys[i], ys, bs[i], bs, self_x=mine, self_ys=own, **kw).value

    s = jax.lax.map(row, jnp.arange(k))
    return s * (1.0 - jnp.eye(k, dtype=dtype))


def _geometric_rates(gaps: Any, *, floor: float = 0.0) -> tuple[float, float]:
    """Fitted geometric rates (ρ, ρ_late) of a decaying sequence gₜ ≈ C ρᵗ (host-side NumPy).

    ρ = exp(slope) of the least-squares line through log gₜ against t over the resolved prefix:
    gₜ from t = 0 up to the first entry that is not above max(``floor``, 10⁻⁶ g₀) (below that, the
    solver's tolerance and round-off dominate). ρ_late is the same fit over the second half of that
    prefix. A geometric decay has ρ_late = ρ; an algebraic one has a local rate that creeps to 1, so
    ρ_late > ρ, nearer 1: on t = 0..40, gₜ = 1/(1+t) fits ρ = 0.94 and ρ_late = 0.97, and its decrements
    1/((1+t)(2+t)) fit ρ = 0.88 and ρ_late = 0.94. NaN with fewer than 3 points (6 for ρ_late).

    Args:
        gaps: (T,) the sequence, e.g. E_t − E_min or the decrements E_t − E_{t+1}.
        floor: the absolute resolution of the gaps (entries at or below it end the prefix).

    Returns:
        (ρ, ρ_late) as floats.

    Example:
        >>> import numpy as np
        >>> [round(r, 6) for r in _geometric_rates(3.0 * 0.7 ** np.arange(20.0))]
        [0.7, 0.7]
    """
    g = np.asarray(gaps, np.float64).reshape(-1)
    if g.size == 0 or not g[0] > 0:
        return float("nan"), float("nan")
    resolved = np.isfinite(g) & (g > max(float(floor), 1e-6 * g[0]))
    count = int(np.argmin(resolved)) if not resolved.all() else g.size  # length of the resolved prefix
    t = np.arange(count, dtype=np.float64)
    log_g = np.log(g[:count])

    def fit(lo: int) -> float:
        return float(np.exp(np.polyfit(t[lo:], log_g[lo:], 1)[0])) if count - lo >= 3 else float("nan")

    return fit(0), fit(count // 2) if count >= 6 else float("nan")


class RetrievalReport(NamedTuple):
    """What one retrieval did (see :meth:`SinkhornHopfield.report`).

    The rates test METHODS.md §2e.5, geometric decay of E(μ_t) − E_min. With E_min given they are
    fitted to E_t − E_min; without it, to the decrements E_t − E_{t+1}, which decay at the same
    rate (E_t − E_min = Cρᵗ ⇒ E_t − E_{t+1} = C(1 − ρ)ρᵗ) and need no estimate of E_min. (The gap
    to the last evaluated energy, E_t − E_T, is not one: it collapses to 0 at t = T and makes any
    decay, 1/(1+t) included, look geometric.) The fit is in ``_geometric_rates``: ρ = exp(slope) of
    log gₜ against t over the resolved prefix of the gaps, ρ_late the same over its second half.

    Attributes:
        index: argmin_k S_ε(μ_T, ξ_k), the retrieved pattern.
        start_index: the same at μ_0.
        divergence: S_ε(μ_T, ξ_index).
        margin: second-smallest minus smallest S_ε at μ_T.
        num_steps: moves made.
        stopped: the energy criterion stopped it before the budget.
        energy_drop: E(μ_0) − E(μ_T).
        monotone: E never rose by more than 1e-5·(1 + |E|).
        rate: the geometric rate ρ fitted over the whole resolved trace (NaN with fewer than 3 points).
        late_rate: the rate fitted over its second half; geometric convergence means it stays
            below 1 like ``rate`` (an algebraic decay drives it towards 1; NaN with fewer than 6 points).
        stayed_in_basin: S_ε(μ_t, ξ_{start_index}) ≤ its radius at every t (None without radii).
        sinkhorn_converged: every solve converged.
    """

    index: int
    start_index: int
    divergence: float
    margin: float
    num_steps: int
    stopped: bool
    energy_drop: float
    monotone: bool
    rate: float
    late_rate: float
    stayed_in_basin: bool | None
    sinkhorn_converged: bool

    @classmethod
    def from_trace(cls, trace: Trace, radii: Any = None, *, energy_min: Any = None) -> RetrievalReport:
        """Build the report from a single :meth:`SinkhornHopfield.retrieve` trace (``energy_min``: E_min)."""
        active = np.asarray(trace["active"])
        if active.ndim != 1:
            raise ValueError(
                f"trace must be a single retrieval (index a batch first), got active of shape {active.shape}"
            )
        n_eval = int(active.sum())
        raw = np.asarray(trace["energy"])
        energy = raw.astype(np.float64)[:n_eval]
        div = np.asarray(trace["divergences"], np.float64)[:n_eval]
        final = np.sort(div[-1])
        k0 = int(np.argmin(div[0]))
        # Energies are only resolved to a few ulps of their size: gaps below that are round-off.
        floor = 16.0 * float(np.finfo(raw.dtype).eps) * (1.0 + float(np.max(np.abs(energy))))
        if energy_min is None:
            gaps = energy[:-1] - energy[1:]
        else:
            e_min = float(np.asarray(energy_min, np.float64))
            if not np.isfinite(e_min):
                raise ValueError(f"energy_min must be finite, got {e_min}")
            gaps = energy - e_min
        rate, late_rate = _geometric_rates(gaps, floor=floor)
        stayed = None
        if radii is not None:
            r = np.asarray(radii, np.float64)
            stayed = bool(np.all(div[:, k0] <= r[k0]))
        rises = np.diff(energy) > 1e-5 * (1.0 + np.abs(energy[1:]))
        return cls(
            index=int(np.argmin(div[-1])),
            start_index=k0,
            divergence=float(final[0]),
            margin=float(final[1] - final[0]) if final.size > 1 else float("inf"),
            num_steps=n_eval - 1,
            stopped=n_eval < active.shape[0],
            energy_drop=float(energy[0] - energy[-1]),
            monotone=not bool(np.any(rises)),
            rate=rate,
            late_rate=late_rate,
            stayed_in_basin=stayed,
            sinkhorn_converged=bool(np.all(np.asarray(trace["converged"])[:n_eval])),
        )


# ----------------------------------------------------------------------------- the baseline
class EuclideanHopfield(AbstractFlow):
    """Modern Hopfield network on clouds flattened in their stored order (the baseline, §2f).

    v = vec(x) ∈ ℝ^{nd}; one step v ← (1 − τ) v + τ Σ_k softmax_k(−β‖v − vec ξ_k‖²/2) vec ξ_k
    (Ramsauer et al. 2020 with the squared-distance score). ``info``: ``energy`` =
    −(1/β) log Σ_k exp(−β‖v − vec ξ_k‖²/2) at the start of the step. It needs a query of exactly
    the stored shape and ignores weights: permutations and dropped points are invisible to it.

    Args:
        patterns: (K, n, d) clouds of equal size.
        beta: inverse temperature β > 0.
        step_size: τ ∈ (0, 1] (1 is the classical one-step update).
    """

    patterns: Float[Array, "K n d"]
    beta: Float[Array, ...]
    step_size: Float[Array, ...]

    def __init__(self, patterns: Any, beta: Any, *, step_size: Any = 1.0):
        """See the class docstring."""
        if isinstance(patterns, Sequence):
            sizes = {np.shape(p) for p in patterns}
            if len(sizes) > 1:
                raise ValueError(
                    f"patterns must all have the same shape for the Euclidean baseline, got {sorted(sizes)}"
                )
        p = _validate.floating_array("patterns", patterns)
        if p.ndim != 3 or min(p.shape) == 0:
            raise ValueError(f"patterns must have shape (K, n, d) with K, n, d >= 1, got {p.shape}")
        self.patterns = _validate.finite("patterns", p)
        _validate.positive("beta", beta)
        _validate.in_closed_interval("step_size", step_size, 0.0, 1.0)
        _validate.positive("step_size", step_size)
        self.beta = jnp.asarray(beta, p.dtype)
        self.step_size = jnp.asarray(step_size, p.dtype)

    def init(self, x: Any, logw: Any = None) -> Particles:
        """A query of the stored shape (n, d)."""
        state = Particles.create(x, logw)
        if state.x.shape != self.patterns.shape[1:]:
            raise ValueError(f"x must have the stored shape {self.patterns.shape[1:]}, got {state.x.shape}")
        return state

    def scores(self, x: Any) -> Float[Array, " K"]:
        """½‖vec x − vec ξ_k‖² for every pattern."""
        x = jnp.asarray(x)
        diff = self.patterns.astype(x.dtype) - x[None]
        return 0.5 * jnp.sum(diff.reshape(diff.shape[0], -1) ** 2, axis=1)

    def _update(self, x: Array) -> tuple[Array, Array]:
        dtype = x.dtype
        beta, tau = self.beta.astype(dtype), self.step_size.astype(dtype)
        s = self.scores(x)
        target = jnp.tensordot(jax.nn.softmax(-beta * s), self.patterns.astype(dtype), axes=1)
        return (1 - tau) * x + tau * target, -logsumexp(-beta * s) / beta

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One modern-Hopfield update (deterministic; the key is unused)."""
        del key
        x, energy = self._update(state.x)
        t = state.t + self.step_size.astype(state.t.dtype)
        return Particles(x, state.logw, state.v, t, state.aux), {"energy": energy}

    def retrieve(self, query: Any, *, num_steps: int = 10) -> tuple[Particles, Trace]:
        """Run ``num_steps`` updates from ``query`` (n, d) with :func:`dpflows.run`; jit/vmap-able.

        ``trace["energy"]`` per step (at the state the step starts from); ``trace.ok``: finite result.
        """
        num_steps = _validate.positive_int("num_steps", num_steps)
        state = self.init(_validate.floating_array("query", query))
        return _euclidean_retrieve(self, state, num_steps)

    def classify(self, query: Any) -> Int[Array, ""]:
        """argmin_k ‖vec query − vec ξ_k‖ (no update is run)."""
        x = query.x if isinstance(query, Particles) else _validate.floating_array("query", query)
        if x.shape != self.patterns.shape[1:]:
            raise ValueError(f"query must have the stored shape {self.patterns.shape[1:]}, got {x.shape}")
        return jnp.argmin(self.scores(x))


@eqx.filter_jit
def _euclidean_retrieve(baseline: EuclideanHopfield, state: Particles, num_steps: int) -> tuple[Particles, Trace]:
    # The update is deterministic: the key only satisfies run's signature.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlowWarning)
        final, ran = run(baseline, state, _unused_key(), num_steps, throw=False)
    steps = jnp.arange(1, num_steps + 1, dtype=jnp.int32)
    return final, Trace(info=ran.info, states=None, record_steps=steps, ok=jnp.all(jnp.isfinite(final.x)))
