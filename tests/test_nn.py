"""The shared small networks (dpflows.nn): shapes, determinism, equivalence to eqx.nn.MLP, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import nn


def test_mlp_matches_equinox_mlp_for_the_same_key():
    ref = eqx.nn.MLP(3, 2, 16, 2, activation=jax.nn.silu, key=jr.key(5))
    mine = nn.MLP(jr.key(5), in_size=3, out_size=2, width=16, depth=2)
    x = jr.normal(jr.key(1), (7, 3))
    np.testing.assert_array_equal(jax.vmap(mine)(x), jax.vmap(ref)(x))


def test_generator_shapes_and_reexport():
    assert dpflows.ldp.MLPGenerator is nn.MLPGenerator
    gen = nn.MLPGenerator(jr.key(0), latent_dim=4, data_dim=3, width=8, depth=2)
    assert gen.latent_dim == 4
    out = jax.vmap(gen)(jr.normal(jr.key(1), (10, 4)))
    assert out.shape == (10, 3)
    assert bool(jnp.all(jnp.isfinite(out)))
    # same key, same weights; different key, different weights
    again = nn.MLPGenerator(jr.key(0), latent_dim=4, data_dim=3, width=8, depth=2)
    other = nn.MLPGenerator(jr.key(9), latent_dim=4, data_dim=3, width=8, depth=2)
    z = jnp.ones(4)
    np.testing.assert_array_equal(gen(z), again(z))
    assert not np.allclose(gen(z), other(z))


def test_generator_gradients_reach_every_weight():
    gen = nn.MLPGenerator(jr.key(0), latent_dim=2, data_dim=2, width=8, depth=2)
    z = jr.normal(jr.key(1), (5, 2))
    grads = eqx.filter_grad(lambda g: jnp.sum(jax.vmap(g)(z) ** 2))(gen)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert leaves
    assert all(bool(jnp.any(g != 0)) for g in leaves)


def test_autoencoder_normalize_sigmoid_and_shapes():
    ae = nn.MLPAutoencoder(jr.key(0), data_dim=6, latent_dim=3, width=16, normalize=True)
    x = jr.uniform(jr.key(1), (4, 6))
    codes = jax.vmap(ae.encode)(x)
    np.testing.assert_allclose(jnp.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
    rec = jax.vmap(ae)(x)
    assert rec.shape == (4, 6)
    assert bool(jnp.all((rec > 0) & (rec < 1)))
    raw = nn.MLPAutoencoder(jr.key(0), data_dim=6, latent_dim=3, width=16, sigmoid=False)
    np.testing.assert_allclose(jax.nn.sigmoid(raw.decode(codes[0])), ae.decode(codes[0]), rtol=1e-6)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: nn.MLP(jr.key(0), in_size=0, out_size=2), "in_size"),
        (lambda: nn.MLP(jr.key(0), in_size=2, out_size=2, width=0), "width"),
        (lambda: nn.MLPGenerator(jr.key(0), latent_dim=0, data_dim=2), "latent_dim"),
        (lambda: nn.MLPGenerator(jr.key(0), latent_dim=2, data_dim=-1), "data_dim"),
        (lambda: nn.MLPAutoencoder(jr.key(0), data_dim=4, latent_dim=2, depth=0), "depth"),
    ],
)
def test_bad_sizes_name_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()
