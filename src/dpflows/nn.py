"""The small networks every method shares: a plain MLP, an MLP generator and an MLP autoencoder.

All three are equinox modules (pytrees): their weights are the inexact-array leaves that
:func:`dpflows.fit` trains, and everything else (sizes, flags) is static. Each acts on *one* input
vector; batches come from ``jax.vmap`` (the equinox convention). Every map is differentiable in its
weights and its input (SiLU activations, optional sigmoid output).

Example:
    >>> import jax, jax.numpy as jnp, jax.random as jr
    >>> gen = MLPGenerator(jr.key(0), latent_dim=2, data_dim=3, width=8, depth=1)
    >>> jax.vmap(gen)(jnp.zeros((5, 2))).shape
    (5, 3)
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from . import _validate
from ._typing import Array, Float, PRNGKeyArray

__all__ = ["MLP", "MLPAutoencoder", "MLPGenerator"]


class MLP(eqx.Module):
    """x ↦ W_{L+1} σ(W_L … σ(W_1 x + b_1) … + b_L) + b_{L+1}: ``depth`` hidden layers of ``width`` units.

    A thin wrapper of :class:`equinox.nn.MLP` with validated sizes and the library's default
    activation σ = SiLU (smooth, so gradients in x are continuous). The same ``key`` gives the same
    weights as ``eqx.nn.MLP(in_size, out_size, width, depth, activation=jax.nn.silu, key=key)``.

    Args:
        key: PRNG key for the initial weights.
        in_size: input dimension.
        out_size: output dimension.
        width: units per hidden layer.
        depth: number of hidden layers (0: one affine map).
        activation: hidden-layer activation (a module-level function, so the module stays hashable).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> MLP(jr.key(0), in_size=3, out_size=2, width=4, depth=2)(jnp.ones(3)).shape
        (2,)
    """

    net: eqx.nn.MLP
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        in_size: int,
        out_size: int,
        width: int = 128,
        depth: int = 2,
        activation: Callable[[Array], Array] = jax.nn.silu,
    ):
        """See the class docstring."""
        self.in_size = _validate.positive_int("in_size", in_size)
        self.out_size = _validate.positive_int("out_size", out_size)
        width = _validate.positive_int("width", width)
        depth = _validate.positive_int("depth", depth, allow_zero=True)
        self.net = eqx.nn.MLP(self.in_size, self.out_size, width, depth, activation=activation, key=key)

    def __call__(self, x: Float[Array, " i"]) -> Float[Array, " o"]:
        """The network on one input vector."""
        return self.net(x)


class MLPGenerator(eqx.Module):
    """G(z) = MLP(z): latent N(0, I_{latent_dim}) → data space, a small default generator.

    Args:
        key: PRNG key for the initial weights.
        latent_dim: latent size k.
        data_dim: sample size d.
        width: units per hidden layer.
        depth: hidden layers (SiLU activations).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> MLPGenerator(jr.key(0), latent_dim=4, data_dim=2, width=16, depth=2)(jnp.zeros(4)).shape
        (2,)
    """

    mlp: MLP
    latent_dim: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, latent_dim: int, data_dim: int, width: int = 128, depth: int = 3):
        """Build the MLP (``depth`` hidden layers of ``width`` units, SiLU activations)."""
        self.latent_dim = _validate.positive_int("latent_dim", latent_dim)
        data_dim = _validate.positive_int("data_dim", data_dim)
        self.mlp = MLP(key, in_size=self.latent_dim, out_size=data_dim, width=width, depth=depth)

    def __call__(self, z: Float[Array, " k"]) -> Float[Array, " d"]:
        """One sample from one latent vector."""
        return self.mlp(z)


class MLPAutoencoder(eqx.Module):
    """A small MLP autoencoder: encode ℝᴰ → ℝᵈ, decode ℝᵈ → ℝᴰ (sigmoid output for data in [0, 1]).

    ``normalize=True`` puts codes on the unit sphere, z/‖z‖ (the sliced-flow pipeline's bounded
    latent); ``sigmoid=False`` leaves the decoder output unbounded.

    Args:
        key: PRNG key for the initial weights (split between encoder and decoder).
        data_dim: data size D.
        latent_dim: code size d.
        width: units per hidden layer.
        depth: hidden layers of each MLP (SiLU activations).
        normalize: project codes to the unit sphere.
        sigmoid: squash decoder outputs to (0, 1).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> ae = MLPAutoencoder(jr.key(0), data_dim=5, latent_dim=2, width=8, normalize=True)
        >>> round(float(jnp.linalg.norm(ae.encode(jnp.ones(5)))), 5), ae(jnp.ones(5)).shape
        (1.0, (5,))
    """

    encoder: MLP
    decoder: MLP
    latent_dim: int = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)
    sigmoid: bool = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        data_dim: int,
        latent_dim: int,
        width: int = 256,
        depth: int = 2,
        normalize: bool = False,
        sigmoid: bool = True,
    ):
        """Build the two MLPs (``depth`` hidden layers of ``width`` units, SiLU activations)."""
        data_dim = _validate.positive_int("data_dim", data_dim)
        self.latent_dim = _validate.positive_int("latent_dim", latent_dim)
        width = _validate.positive_int("width", width)
        depth = _validate.positive_int("depth", depth)
        k1, k2 = jr.split(key)
        self.encoder = MLP(k1, in_size=data_dim, out_size=self.latent_dim, width=width, depth=depth)
        self.decoder = MLP(k2, in_size=self.latent_dim, out_size=data_dim, width=width, depth=depth)
        self.normalize, self.sigmoid = bool(normalize), bool(sigmoid)

    def encode(self, x: Float[Array, " D"]) -> Float[Array, " d"]:
        """One code from one sample."""
        z = self.encoder(x)
        return z / jnp.maximum(jnp.linalg.norm(z), 1e-12) if self.normalize else z

    def decode(self, z: Float[Array, " d"]) -> Float[Array, " D"]:
        """One sample from one code."""
        out = self.decoder(z)
        return jax.nn.sigmoid(out) if self.sigmoid else out

    def __call__(self, x: Float[Array, " D"]) -> Float[Array, " D"]:
        """Reconstruction decode(encode(x))."""
        return self.decode(self.encode(x))
