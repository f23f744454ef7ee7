"""Generative models from locally private data: the noise-matched entropic OT loss (METHODS.md §5).

Each user releases Y = X + Z with Z from a local randomiser (:func:`dpflows.privacy.gaussian_ldp`,
:func:`dpflows.privacy.laplace_ldp`). If the cost and the regularisation match the noise density,
e^{−c(0, z)/ε} ∝ p_Z(z), then the *biased* entropic cost

    OT_ε(P, Q) = min_π ⟨c, π⟩ + ε KL(π ‖ P⊗Q)

is minimised over P at the *clean* law P_X when Q = P_X * P_Z: the entropic blur deconvolves the
privacy noise (a Shannon-lower-bound argument, METHODS.md §5b). With dpflows' cost c = ½‖x − y‖²:

* Gaussian noise N(0, σ²I): c = ½‖x − y‖², ε = σ²;
* i.i.d. Laplace(b) coordinates: c = ‖x − y‖₁, ε = b.

The debiased Sinkhorn divergence and unregularised W₂ are minimised at the *noisy* law instead;
they are offered here (``loss="divergence"``, ``loss="w2"``, or a mismatched ``epsilon=``) so that
experiments can show why matching matters.

Privacy: the model is post-processing of the privatised records, so its guarantee is the
randomiser's per-record certificate (local model, replace-one), whatever the training does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from . import _validate, ot, privacy
from ._typing import Array, Float, Info, PRNGKeyArray, Real
from .flow import AbstractFlow
from .particles import Particles
from .privacy import PrivacyCertificate, Release

__all__ = [
    "LOSSES",
    "GaussianNoise",
    "LDPTrainResult",
    "LaplaceNoise",
    "MLPGenerator",
    "ParticleDenoiser",
    "TrainResult",
    "noise_matched_loss",
    "noise_of",
    "train_generator",
    "train_ldp_generator",
]

LOSSES = ("entropic", "divergence", "w2")
#: ε of ``loss="w2"``, relative to the mean cost: the debiased divergence then approximates ½W₂² (bias O(ε²)).
W2_RELATIVE_EPSILON = 0.01


# ------------------------------------------------------------------------------------- noises
class GaussianNoise(eqx.Module):
    """Additive N(0, σ²I) noise; matched loss: c = ½‖x − y‖², ε = σ² (e^{−c(0,z)/ε} ∝ its density)."""

    sigma: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    cost: ClassVar[str] = "sqeuclidean"

    def __check_init__(self):
        _validate.positive("sigma", self.sigma)

    @property
    def matched_epsilon(self) -> Array:
        """ε = σ² (for the cost ½‖x − y‖²)."""
        return self.sigma**2

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any = None) -> Array:
        """Draw noise of the given shape."""
        dtype = dtype or jnp.result_type(float)
        return self.sigma.astype(dtype) * jr.normal(key, shape, dtype=dtype)


class LaplaceNoise(eqx.Module):
    """Additive i.i.d. Laplace(b) noise per coordinate; matched loss: c = ‖x − y‖₁, ε = b."""

    scale: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    cost: ClassVar[str] = "l1"

    def __check_init__(self):
        _validate.positive("scale", self.scale)

    @property
    def matched_epsilon(self) -> Array:
        """ε = b (for the cost ‖x − y‖₁)."""
        return self.scale

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any = None) -> Array:
        """Draw noise of the given shape."""
        dtype = dtype or jnp.result_type(float)
        return self.scale.astype(dtype) * jr.laplace(key, shape, dtype=dtype)


Noise = GaussianNoise | LaplaceNoise


def noise_of(release: Any) -> Noise:
    """The noise a local randomiser added, read from its release (or certificate).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> from dpflows import privacy
        >>> rel = privacy.gaussian_ldp(jr.key(0), jnp.zeros((3, 2)), epsilon=1.0, delta=1e-5, radius=1.0)
        >>> round(float(noise_of(rel).sigma), 3)  # the analytic-Gaussian σ for Δ₂ = 2, (1, 1e-5)
        7.461
    """
    cert = release.certificate if isinstance(release, Release) else release
    if not isinstance(cert, PrivacyCertificate):
        raise TypeError(f"release must be a Release or PrivacyCertificate, got {type(release).__name__}")
    kind, scale = cert.parameters.get("kind"), cert.parameters.get("scale")
    if kind == "gaussian" and scale is not None:
        return GaussianNoise(scale)
    if kind == "laplace" and scale is not None:
        return LaplaceNoise(scale)
    raise ValueError(f"release of {cert.mechanism!r} does not describe additive Gaussian or Laplace noise")


def _check_noise(noise):
    if not isinstance(noise, GaussianNoise | LaplaceNoise):
        raise TypeError(f"noise must be a GaussianNoise or LaplaceNoise, got {type(noise).__name__}")


# -------------------------------------------------------------------------------------- loss
class _Solve(NamedTuple):
    value: Array
    potentials: tuple[Array, ...]
    converged: Array
    num_iters: Array


def _loss_solve(x, y, a, b, noise, loss, epsilon, init, max_iterations, threshold, warn) -> _Solve:
    kw = dict(max_iterations=max_iterations, threshold=threshold, warn=warn, init=init)
    if loss == "w2":
        eps = W2_RELATIVE_EPSILON if epsilon is None else epsilon
        res = ot.sinkhorn_divergence(x, y, a, b, epsilon=eps, relative_epsilon=True, **kw)
    else:
        eps = noise.matched_epsilon if epsilon is None else epsilon
        if loss == "divergence":
            res = ot.sinkhorn_divergence(x, y, a, b, epsilon=eps, cost=noise.cost, **kw)
        else:
            res = ot.entropic_ot(x, y, a, b, epsilon=eps, cost=noise.cost, **kw)
            return _Solve(res.cost, (res.f, res.g), res.converged, res.num_iters)
    return _Solve(res.value, (res.f_xy, res.g_xy, res.f_xx, res.g_yy), res.converged, res.xy.num_iters)


def _check_loss(loss, noise, epsilon):
    _validate.one_of("loss", loss, LOSSES)
    _check_noise(noise)
    if epsilon is not None:
        _validate.positive("epsilon", epsilon)


def noise_matched_loss(
    x_model: Any,
    y_private: Any,
    *,
    noise: Noise,
    a: Any = None,
    b: Any = None,
    loss: str = "entropic",
    epsilon: Any = None,
    max_iterations: int = 1000,
    threshold: float = 1e-3,
    warn: bool = True,
) -> Float[Array, ""]:
    """The entropic OT cost with cost and ε matched to the privacy noise, differentiable in ``x_model``.

    ``loss="entropic"`` (default): OT_ε(μ_model, ν_private) with (c, ε) = (½‖·‖², σ²) for
    :class:`GaussianNoise` and (‖·‖₁, b) for :class:`LaplaceNoise`; minimised at the clean law.
    Comparators: ``epsilon=`` overrides ε (a mismatched blur); ``loss="divergence"`` is the
    debiased Sinkhorn divergence at the same (c, ε) (minimised at the noisy law);
    ``loss="w2"`` approximates ½W₂² by the debiased divergence at ε = ``epsilon`` (default 0.01)
    relative to the mean cost. Gradients follow the envelope theorem (potentials held fixed).

    Args:
        x_model: (n, d) model samples.
        y_private: (m, d) privatised records.
        noise: the randomiser's noise (:func:`noise_of` reads it from a release).
        a: weights of the model samples (uniform if None).
        b: weights of the private records (uniform if None).
        loss: ``"entropic"``, ``"divergence"`` or ``"w2"``.
        epsilon: ε override (``None`` = matched).
        max_iterations: Sinkhorn iteration budget.
        threshold: Sinkhorn marginal-error tolerance.
        warn: warn if a concrete solve did not converge.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> k1, k2, k3 = jr.split(jr.key(0), 3)
        >>> y = 0.5 * jr.normal(k1, (2000, 1)) + 0.5 * jr.normal(k2, (2000, 1))  # clean sd .5, noise sd .5
        >>> x = jr.normal(k3, (1000, 1))
        >>> loss = lambda s: noise_matched_loss(s * x, y, noise=GaussianNoise(0.5))
        >>> bool(loss(0.5) < loss(jnp.sqrt(0.5)))  # the clean sd beats the noisy one
        True
    """
    _check_loss(loss, noise, epsilon)
    x = _validate.floating_array("x_model", x_model)
    y = _validate.floating_array("y_private", y_private).astype(x.dtype)
    return _loss_solve(x, y, a, b, noise, loss, epsilon, None, max_iterations, threshold, warn).value


# --------------------------------------------------------------------------------- generators
class MLPGenerator(eqx.Module):
    """G(z) = MLP(z): latent N(0, I_{latent_dim}) → data space, a small default generator."""

    mlp: eqx.nn.MLP
    latent_dim: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, latent_dim: int, data_dim: int, width: int = 128, depth: int = 3):
        """Build the MLP (``depth`` hidden layers of ``width`` units, SiLU activations)."""
        self.latent_dim = _validate.positive_int("latent_dim", latent_dim)
        _validate.positive_int("data_dim", data_dim)
        self.mlp = eqx.nn.MLP(latent_dim, data_dim, width, depth, activation=jax.nn.silu, key=key)

    def __call__(self, z: Float[Array, " k"]) -> Float[Array, " d"]:
        """One sample from one latent vector."""
        return self.mlp(z)


class TrainResult(NamedTuple):
    """What :func:`train_generator` returns.

    Attributes:
        generator: the trained generator. opt_state: the optimizer state (to continue training).
        loss: the loss at every step, (num_steps,). converged: whether each step's Sinkhorn solve
        converged, (num_steps,).
    """

    generator: Any
    opt_state: Any
    loss: Array
    converged: Array


def _data_batch(key, y, size):
    if size is None:
        return y
    idx = jr.choice(key, y.shape[0], (size,), replace=False)
    return y[idx]


@eqx.filter_jit
def _train_chunk(params, static, opt_state, keys, y, optimizer, spec):
    noise, loss, epsilon, batch_size, data_batch_size, latent_dim, max_iterations, threshold = spec

    def one(carry, k):
        params, opt_state = carry
        kz, ky = jr.split(k)
        z = jr.normal(kz, (batch_size, latent_dim), dtype=y.dtype)
        yb = _data_batch(ky, y, data_batch_size)

        def objective(p):
            x = jax.vmap(eqx.combine(p, static))(z).astype(y.dtype)
            res = _loss_solve(x, yb, None, None, noise, loss, epsilon, None, max_iterations, threshold, False)
            return res.value, res.converged

        (value, conv), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts with floats
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), (value, conv)

    (params, opt_state), (values, conv) = jax.lax.scan(one, (params, opt_state), keys)
    return params, opt_state, values, conv


def train_generator(
    generator: Callable[[Array], Array],
    y_private: Any,
    *,
    noise: Noise,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    data_batch_size: int | None = None,
    latent_dim: int | None = None,
    loss: str = "entropic",
    epsilon: Any = None,
    opt_state: Any = None,
    max_iterations: int = 500,
    threshold: float = 1e-3,
    progress: bool = False,
    chunk_size: int = 100,
) -> TrainResult:
    """Fit an equinox generator to privatised records by minimising :func:`noise_matched_loss`.

    Each step draws ``batch_size`` latents z ~ N(0, I), a data batch (all records if
    ``data_batch_size`` is None, else a uniform subset without replacement) and takes an optax step on
    ∇_θ OT_ε(G_θ#z, y). Minibatch entropic OT has a different minimiser than the population loss
    (METHODS.md §5c): keep data batches in the thousands. Steps run as one compiled ``lax.scan`` per
    ``chunk_size`` steps (a progress bar between chunks when ``progress``).

    Args:
        generator: an equinox module mapping one latent vector to one sample (its inexact arrays
            are trained; e.g. :class:`MLPGenerator`).
        y_private: (m, d) privatised records.
        noise: the randomiser's noise (sets the matched cost and ε).
        optimizer: an optax transformation, e.g. ``optax.adam(1e-3)``.
        num_steps: optimisation steps (0 returns the generator unchanged).
        batch_size: model samples per step.
        key: PRNG key for latents and data batches.
        data_batch_size: private records per step (None: all of them).
        latent_dim: latent size (default: ``generator.latent_dim``).
        loss: ``"entropic"`` (matched), ``"divergence"`` or ``"w2"`` (see :func:`noise_matched_loss`).
        epsilon: ε override (a mismatched blur).
        opt_state: optimizer state to continue from (default: ``optimizer.init``).
        max_iterations: Sinkhorn iterations per step.
        threshold: Sinkhorn tolerance.
        progress: show a tqdm progress bar.
        chunk_size: steps per compiled chunk.

    Returns:
        :class:`TrainResult`.
    """
    _check_loss(loss, noise, epsilon)
    y = _validate.finite("y_private", _validate.floating_array("y_private", y_private))
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"y_private must have shape (m, d) with m >= 1, got {y.shape}")
    num_steps = _validate.positive_int("num_steps", num_steps, allow_zero=True)
    batch_size = _validate.positive_int("batch_size", batch_size)
    chunk_size = _validate.positive_int("chunk_size", chunk_size)
    if data_batch_size is not None:
        data_batch_size = _validate.positive_int("data_batch_size", data_batch_size)
        if data_batch_size > y.shape[0]:
            raise ValueError(f"data_batch_size must be <= the number of records {y.shape[0]}, got {data_batch_size}")
    latent_dim = getattr(generator, "latent_dim", None) if latent_dim is None else latent_dim
    if latent_dim is None:
        raise ValueError("latent_dim must be given (the generator has no latent_dim attribute)")
    latent_dim = _validate.positive_int("latent_dim", latent_dim)
    try:
        probe = jax.eval_shape(generator, jax.ShapeDtypeStruct((latent_dim,), y.dtype))
    except (TypeError, ValueError) as err:
        raise ValueError(f"generator must map a latent ({latent_dim},) to a sample {y.shape[1:]}: {err}") from err
    if getattr(probe, "shape", None) != y.shape[1:]:
        raise ValueError(
            f"generator must map a latent ({latent_dim},) to a sample {y.shape[1:]}, "
            f"got {getattr(probe, 'shape', probe)}"
        )
    params, static = eqx.partition(generator, eqx.is_inexact_array)
    if opt_state is None:
        with jax.numpy_dtype_promotion("standard"):
            opt_state = optimizer.init(params)
    spec = (noise, loss, epsilon, batch_size, data_batch_size, latent_dim, max_iterations, threshold)
    keys = jr.split(key, max(num_steps, 1))[:num_steps]
    values, conv = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="train_generator")
    for start in range(0, num_steps, chunk_size):
        chunk = keys[start : start + chunk_size]
        params, opt_state, v, c = _train_chunk(params, static, opt_state, chunk, y, optimizer, spec)
        values.append(v)
        conv.append(c)
        if bar is not None:
            bar.update(chunk.shape[0])
            bar.set_postfix(loss=f"{float(v[-1]):.4g}")
    if bar is not None:
        bar.close()
    empty = jnp.zeros((0,), y.dtype)
    loss_values = jnp.concatenate(values) if values else empty
    converged = jnp.concatenate(conv) if conv else jnp.zeros((0,), bool)
    return TrainResult(eqx.combine(params, static), opt_state, loss_values, converged)


class LDPTrainResult(NamedTuple):
    """What :func:`train_ldp_generator` returns.

    Attributes:
        generator: the trained generator (post-processing of the release).
        loss: per-step loss. certificate: the per-record LDP certificate (covers the generator too).
        noise: the noise description used for the matched loss.
        privatized: the privatised records (only with ``return_privatized=True``, else None).
    """

    generator: Any
    loss: Array
    certificate: PrivacyCertificate
    noise: Noise
    privatized: Array | None


def train_ldp_generator(
    key: PRNGKeyArray,
    generator: Callable[[Array], Array],
    x: Any,
    *,
    mechanism: str,
    epsilon: Real,
    delta: Real | None = None,
    radius: Real | None = None,
    bound: Real | None = None,
    noise_key: Any = None,
    return_privatized: bool = False,
    **train_kwargs: Any,
) -> LDPTrainResult:
    """Privatise every record locally, then train a generator on the release with the matched loss.

    ``mechanism="gaussian"`` calls :func:`dpflows.privacy.gaussian_ldp` (ball of ``radius``,
    (ε, δ) analytic Gaussian); ``"laplace"`` calls :func:`dpflows.privacy.laplace_ldp` (box
    [−bound, bound]ᵈ, ε). The generator is post-processing, so the returned certificate — the
    randomiser's, per record — covers it.

    Args:
        key: PRNG key for training (latents, batches). Not used for the privacy noise.
        generator: as in :func:`train_generator`.
        x: (n, d) raw records (never returned).
        mechanism: ``"gaussian"`` or ``"laplace"``.
        epsilon: per-record ε.
        delta: per-record δ (Gaussian).
        radius: L2 radius of the Gaussian domain.
        bound: box half-width of the Laplace domain.
        noise_key: key of the privacy noise; ``None`` draws a secret one from OS entropy
            (:func:`dpflows.privacy.release_key`). A reproducible key voids the guarantee for anyone
            who knows it.
        return_privatized: also return the privatised records (for audits and plots).
        **train_kwargs: passed to :func:`train_generator` (``optimizer``, ``num_steps``, ...).
    """
    _validate.one_of("mechanism", mechanism, ("gaussian", "laplace"))
    if mechanism == "gaussian":
        if delta is None or radius is None:
            raise ValueError("mechanism='gaussian' needs delta and radius")
        release = privacy.gaussian_ldp(noise_key, x, epsilon=epsilon, delta=delta, radius=radius)
    else:
        if bound is None:
            raise ValueError("mechanism='laplace' needs bound")
        release = privacy.laplace_ldp(noise_key, x, epsilon=epsilon, bound=bound)
    noise = noise_of(release)
    result = train_generator(generator, release.value, noise=noise, key=key, **train_kwargs)
    return LDPTrainResult(
        result.generator, result.loss, release.certificate, noise, release.value if return_privatized else None
    )


# --------------------------------------------------------------------------------- particles
class ParticleDenoiser(AbstractFlow):
    """Free particles moving down the noise-matched loss: the non-parametric variant.

    One step (weights aᵢ, fixed):

        xᵢ ← xᵢ − h · ∇_{xᵢ} L(μ, ν) / aᵢ,

    with L = :func:`noise_matched_loss`. For the matched Gaussian loss ∇_{xᵢ}L/aᵢ = xᵢ − T(xᵢ), T the
    entropic barycentric map onto the private records, so h = 1 is the fixed-point iteration
    x ← T(x). Sinkhorn warm-starts from the previous step's potentials (``aux``). ``info``: ``loss``
    (before the move), ``converged``, ``num_iters``.

    Args:
        y_private: (m, d) privatised records.
        noise: the randomiser's noise.
        step_size: h > 0.
        loss: ``"entropic"`` (matched), ``"divergence"`` or ``"w2"``.
        epsilon: ε override (mismatched blur).
        data_batch_size: records per step (None: all, deterministic flow).
        max_iterations: Sinkhorn iterations per step.
        threshold: Sinkhorn tolerance.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> import dpflows
        >>> k1, k2, k3 = jr.split(jr.key(0), 3)
        >>> y = 2.0 * jr.normal(k1, (1000, 1)) + jr.normal(k2, (1000, 1))  # clean sd 2, noise sd 1
        >>> flow = ParticleDenoiser(y, noise=GaussianNoise(1.0), step_size=1.0)
        >>> state, _ = dpflows.run(flow, flow.init(jr.normal(k3, (300, 1))), jr.key(1), 100)
        >>> bool(abs(jnp.std(state.x) - 2.0) < 0.25)  # the clean sd, not the noisy √5 ≈ 2.24
        True
    """

    y_private: Float[Array, "m d"]
    noise: Noise
    step_size: Float[Array, ...]
    loss: str = eqx.field(static=True, default="entropic")
    epsilon: Float[Array, ...] | None = None
    data_batch_size: int | None = eqx.field(static=True, default=None)
    max_iterations: int = eqx.field(static=True, default=200)
    threshold: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_loss(self.loss, self.noise, self.epsilon)
        y = self.y_private
        if not isinstance(y, jax.Array) or y.ndim != 2 or y.shape[0] == 0:
            raise ValueError(f"y_private must be an array (m, d) with m >= 1, got {getattr(y, 'shape', y)}")
        _validate.finite("y_private", y)
        _validate.positive("step_size", self.step_size)
        if self.data_batch_size is not None:
            _validate.positive_int("data_batch_size", self.data_batch_size)
            if self.data_batch_size > y.shape[0]:
                raise ValueError(f"data_batch_size must be <= {y.shape[0]}, got {self.data_batch_size}")
        _validate.positive_int("max_iterations", self.max_iterations)

    def __init__(
        self,
        y_private: Any,
        *,
        noise: Noise,
        step_size: Any,
        loss: str = "entropic",
        epsilon: Any = None,
        data_batch_size: int | None = None,
        max_iterations: int = 200,
        threshold: float = 1e-3,
    ):
        """See the class docstring."""
        self.y_private = _validate.floating_array("y_private", y_private)
        self.noise = noise
        self.step_size = jnp.asarray(step_size)
        self.loss = loss
        self.epsilon = None if epsilon is None else jnp.asarray(epsilon)
        self.data_batch_size = data_batch_size
        self.max_iterations = max_iterations
        self.threshold = threshold

    def _num_records(self) -> int:
        return self.y_private.shape[0] if self.data_batch_size is None else self.data_batch_size

    def init(self, x: Any, logw: Any = None) -> Particles:
        """Particles at ``x`` (n, d) with zero warm-start potentials in ``aux``."""
        state = Particles.create(x, logw)
        if state.x.ndim != 2 or state.x.shape[1] != self.y_private.shape[1]:
            raise ValueError(f"x must have shape (n, {self.y_private.shape[1]}), got {state.x.shape}")
        n, m, dtype = state.x.shape[0], self._num_records(), state.x.dtype
        zeros = (jnp.zeros((n,), dtype), jnp.zeros((m,), dtype))
        if self.loss != "entropic":
            zeros = (*zeros, jnp.zeros((n,), dtype), jnp.zeros((m,), dtype))
        return Particles(x=state.x, logw=state.logw, v=state.v, t=state.t, aux=zeros)

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One gradient step of the particles on the loss (see the class docstring)."""
        dtype = state.x.dtype
        y = _data_batch(key, self.y_private.astype(dtype), self.data_batch_size)
        a = state.weights
        eps = None if self.epsilon is None else self.epsilon.astype(dtype)
        init = tuple(jax.lax.stop_gradient(p) for p in state.aux)

        def objective(x):
            res = _loss_solve(
                x, y, a, None, self.noise, self.loss, eps, init, self.max_iterations, self.threshold, False
            )
            return res.value, res

        (value, res), grad = jax.value_and_grad(objective, has_aux=True)(state.x)
        safe_a = jnp.where(a > 0, a, 1.0)[:, None]
        x = state.x - self.step_size.astype(dtype) * grad / safe_a
        t = state.t + self.step_size.astype(state.t.dtype)
        new = Particles(x=x, logw=state.logw, v=state.v, t=t, aux=res.potentials)
        return new, {"loss": value, "converged": res.converged, "num_iters": res.num_iters}
