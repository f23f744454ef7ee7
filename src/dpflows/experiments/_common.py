"""Pieces every experiment shares: config checks and the policy for privacy-noise keys.

An experiment's private noise is drawn with a key from OS entropy that is never written anywhere
(``privacy.release_key``), unless its config sets ``reproducible_noise: true`` for debugging, in
which case the key is derived from the seed and the run's outputs say that no privacy claim holds.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.random as jr

from dpflows import privacy

__all__ = ["SECRET", "check_positive", "noise_note", "release_key"]

SECRET = "<secret>"


def check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the field unless every entry of each named config field is > 0."""
    for name in names:
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple | list) else (value,)
        if not values or any(not v > 0 for v in values):
            raise ValueError(f"{name} must be > 0 (every entry), got {value}")


def release_key(seed: int, reproducible: bool, *path: int) -> jax.Array:
    """The privacy-noise key: secret (OS entropy) unless the run asked for reproducible noise.

    With ``reproducible`` the key is ``fold_in(key(seed), 1_000_003)`` followed by ``path`` (one
    index per grid axis), so every release in a grid has its own noise; such noise is public.
    """
    if not reproducible:
        return privacy.release_key()
    key = jr.fold_in(jr.key(seed), 1_000_003)
    for p in path:
        key = jr.fold_in(key, p)
    return key


def noise_note(reproducible: bool) -> tuple[str, str]:
    """(the ``noise_seed`` value written to outputs, the sentence for the report)."""
    if reproducible:
        return (
            "derived from seed (disclosed)",
            "**Noise seed disclosed** (`reproducible_noise: true`): the privacy noise is a function of the config's "
            "seed, so these releases carry no guarantee (covers: none).",
        )
    return (
        SECRET,
        "Privacy noise keys come from OS entropy and are never written (noise seed secret); the certificates cover "
        "the releases as mechanisms under dpflows' threat model (float noise, see `privacy.THREAT_MODEL`).",
    )
