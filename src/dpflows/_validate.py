"""Argument checks shared by every public entry point.

All messages read alike: ``<name> must be <condition>, got <value>``, and say what would work.
Checks on concrete values skip tracers (a flow may be built under ``vmap`` or ``jit``) and reduce
with ``all`` so that stacked hyper-parameters are checked elementwise.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value: Any) -> bool:
    """True if ``value`` holds no tracer (so its numbers can be read in Python)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def _show(value: Any) -> str:
    arr = np.asarray(value)
    if arr.size <= 6:
        return repr(arr.tolist()) if arr.ndim else repr(arr.item())
    return f"array of shape {arr.shape} (min {arr.min():.4g}, max {arr.max():.4g})"


def positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless every entry of ``value`` is finite and > 0.

    With ``allow_zero`` the condition is ≥ 0. Tracers are skipped.
    """
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
        cond = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {cond}, got {_show(value)}")


def in_open_interval(name: str, value: Any, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low < value < high`` elementwise (tracers are skipped)."""
    if value is None or not is_concrete(value):
        return
    arr = _numeric(name, value)
    if np.any(~np.isfinite(arr) | (arr <= low) | (arr >= high)):
        raise ValueError(f"{name} must lie in ({low}, {high}), got {_show(value)}")


def in_closed_interval(name: str, value: Any, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low ≤ value ≤ high`` elementwise (tracers are skipped)."""
    if value is None or not is_concrete(value):
        return
    arr = _numeric(name, value)
    if np.any(~np.isfinite(arr) | (arr < low) | (arr > high)):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {_show(value)}")


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an ``int`` or raise naming ``name`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        cond = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be {cond}, got {value}")
    return int(value)


def one_of(name: str, value: Any, options: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def floating_array(name: str, value: Any, *, min_ndim: int = 0) -> jax.Array:
    """Convert ``value`` to a floating JAX array, naming ``name`` if it is not numeric.

    Integer input is converted to the default float dtype; complex and object input is refused.
    """
    if isinstance(value, jax.Array):
        arr = value
    else:
        try:
            np_arr = np.asarray(value)
        except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name} must be an array, got {type(value).__name__}") from err
        if np_arr.dtype == object or not np.issubdtype(np_arr.dtype, np.number):
            raise TypeError(f"{name} must be a numeric array, got dtype {np_arr.dtype}")
        if np.issubdtype(np_arr.dtype, np.floating):
            # float64 input becomes float32 without x64: refuse values that would overflow to inf
            representable(name, np_arr, jax.dtypes.canonicalize_dtype(np_arr.dtype))
        arr = jnp.asarray(np_arr)
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {arr.shape}")
    return arr


def finite(name: str, value: jax.Array) -> jax.Array:
    """Fail if ``value`` has NaN or inf: a Python ``ValueError`` when concrete, else ``eqx.error_if``.

    Returns ``value`` (use the return value inside ``jit`` or the check disappears).
    """
    if is_concrete(value):
        # NumPy, not jnp: inside jit a closed-over concrete array still yields traced jnp results.
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} NaN/inf entries")
        return value
    return eqx.error_if(value, ~jnp.all(jnp.isfinite(value)), f"{name} must be finite (NaN/inf found)")


def in_half_open_interval(name: str, value: Any, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low ≤ value < high`` elementwise (tracers are skipped)."""
    if value is None or not is_concrete(value):
        return
    arr = _numeric(name, value)
    if np.any(~np.isfinite(arr) | (arr < low) | (arr >= high)):
        raise ValueError(f"{name} must lie in [{low}, {high}), got {_show(value)}")


def integer_valued(name: str, value: Any, *, minimum: int = 0) -> None:
    """Raise ``ValueError`` unless every entry is a finite whole number ≥ ``minimum`` (tracers skipped).

    Accepts int and float arrays (``2250.0`` is a valid step count); bools are refused.
    """
    if value is None or not is_concrete(value):
        return
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    arr = _numeric(name, value)
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a whole number, got dtype bool")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr < minimum) | (arr != np.round(arr))
    if np.any(bad):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {_show(value)}")


def not_nan(name: str, value: Any) -> None:
    """Raise ``ValueError`` if a concrete ``value`` holds NaN (±inf allowed; tracers are skipped)."""
    if value is None or not is_concrete(value):
        return
    arr = _numeric(name, value)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} must not contain NaN, got {int(np.sum(np.isnan(arr)))} NaN entries")


def _numeric(name: str, value: Any) -> np.ndarray:
    """``value`` as a real NumPy array, or ``TypeError`` naming ``name``."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    return arr


def prng_key(name: str, key: Any) -> Any:
    """Return ``key`` if it is a JAX PRNG key (typed, or raw ``uint32`` data), else ``TypeError``.

    An ``int`` seed is refused with the fix: build the key with ``jax.random.key(seed)``.
    """
    if isinstance(key, jax.Array) or isinstance(key, jax.core.Tracer):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == jnp.uint32 and key.ndim >= 1 and key.shape[-1] == 2:
            return key
    raise TypeError(
        f"{name} must be a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}"
        + (f" of dtype {key.dtype} and shape {key.shape}" if hasattr(key, "dtype") and hasattr(key, "shape") else "")
    )


def scalar(name: str, value: Any) -> float:
    """Return a concrete real scalar as a Python ``float``, or raise naming ``name``.

    Bools, strings, arrays with more than one entry and tracers are refused (host-side code that
    calls ``float`` on them would fail without naming the argument).
    """
    if isinstance(value, bool) or isinstance(value, np.bool_):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not is_concrete(value):
        raise TypeError(f"{name} must be a concrete number here (host-side computation), got a traced value")
    arr = _numeric(name, value)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    return float(arr)


def show(value: Any) -> str:
    """``value`` as it appears in messages: small arrays in full, large ones by shape and range."""
    return _show(value)


def real_numpy(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 NumPy array without a round trip through JAX's default dtype.

    ``TypeError`` naming ``name`` for non-numeric, complex or bool input (host-side metrics keep
    float64 even when JAX runs in float32, so 1e200 stays 1e200 instead of overflowing to inf).
    """
    arr = _numeric(name, value)
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a numeric array, got dtype bool")
    return arr.astype(np.float64)


def required(name: str, value: Any) -> Any:
    """Refuse ``None`` for a required argument (the range checks above skip ``None`` as "not given")."""
    if value is None:
        raise TypeError(f"{name} must be a number, got None")
    return value


def representable(name: str, value: Any, dtype: Any) -> None:
    """Raise ``ValueError`` if a concrete ``value`` overflows ``dtype`` (e.g. 1e300 in float32).

    Without this check the cast turns it into ±inf (with only a NumPy ``RuntimeWarning``).
    """
    if value is None or not is_concrete(value) or not jnp.issubdtype(dtype, jnp.floating):
        return
    arr = _numeric(name, value)
    largest = float(jnp.finfo(dtype).max)
    with np.errstate(invalid="ignore"):
        too_big = np.isfinite(arr) & (np.abs(arr.astype(np.float64)) > largest)
    if np.any(too_big):
        raise ValueError(
            f"{name} must be <= {largest:.4g} in magnitude (the largest {jnp.dtype(dtype)}), got {show(value)}"
        )
