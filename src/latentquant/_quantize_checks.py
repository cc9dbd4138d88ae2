"""The argument checks of ``LatentQuantize`` (private), and its state-dict upgrade.

Every check raises ValueError or TypeError with a message naming the argument
and what was expected. Sizes are bounded before anything is allocated: a
``codebook_dim`` of 10**9 is refused in one line, not after building a list of
10**9 levels.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence, Sized
from typing import NamedTuple

import torch
from torch import Tensor

# the bounds: what one layer may hold
MAX_LATENTS = 2**16  # codebook_dim (the exact codebook size, prod(levels), is then computed in under a second)
MAX_VALUES = 2**26  # codebook_dim x max(levels), the values table (256 MiB in float32)
MAX_FEATURES = 2**24  # dim, and num_codebooks x codebook_dim
MAX_PROJECTION = 2**28  # dim x num_codebooks x codebook_dim, the weights of one projection (1 GiB in float32)
INT64_CODES = 2**63  # flat indices 0 .. 2**63 - 1 fit in int64


class Arguments(NamedTuple):
    """The constructor's arguments, checked and normalised."""

    levels: tuple[int, ...]
    dim: int
    num_codebooks: int
    keep_num_codebooks_dim: bool
    commitment_loss_weight: float
    quantization_loss_weight: float
    channel_first: bool | None


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _bound(name: str, size: int, what: str, bound: int) -> None:
    """ValueError unless ``size`` <= ``bound``, e.g. 'codebook_dim: 1,000,000,000
    latents, more than a LatentQuantize layer holds (65,536 = 2**16)'."""
    if size > bound:
        raise ValueError(
            f"{name}: {size:,} {what}, more than a LatentQuantize layer holds ({bound:,} = 2**{bound.bit_length() - 1})"
        )


def _positive(name: str, value) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_levels(levels, codebook_dim) -> tuple[int, ...]:
    """``levels`` (an int with ``codebook_dim``, or a sequence) -> a tuple of ints >= 2, bounded."""
    if codebook_dim is not None:
        codebook_dim = _positive("codebook_dim", codebook_dim)
        _bound("codebook_dim", codebook_dim, "latents", MAX_LATENTS)
    if isinstance(levels, Tensor):
        if levels.ndim > 1 or levels.is_floating_point() or levels.is_complex() or levels.dtype == torch.bool:
            raise TypeError(
                f"levels must be an int or a 1-D integer tensor, got a {levels.dtype} tensor of shape "
                f"{tuple(levels.shape)}"
            )
        _bound("levels", levels.numel(), "latents", MAX_LATENTS)
        levels = levels.tolist()
    if isinstance(levels, (bool, str, bytes)):
        raise TypeError(f"levels must be an int or a list of ints, got {levels!r}")
    if is_int(levels):
        if levels < 2:
            raise ValueError(f"levels={levels}: every latent needs at least 2 values")
        if codebook_dim is None:
            raise ValueError(f"levels={levels} is a single int: also pass codebook_dim, the number of latents")
        _bound("levels", codebook_dim * levels, f"values ({codebook_dim:,} latents x {levels:,})", MAX_VALUES)
        return (int(levels),) * codebook_dim
    if isinstance(levels, Sized):
        _bound("levels", len(levels), "latents", MAX_LATENTS)
    try:  # at most one past the bound, whatever the iterable
        given = list(itertools.islice(iter(levels), MAX_LATENTS + 1))
    except TypeError:
        raise TypeError(f"levels must be an int or a list of ints, got {levels!r}") from None
    if len(given) > MAX_LATENTS:
        raise ValueError(f"levels: more than {MAX_LATENTS:,} latents, the most a LatentQuantize layer holds")
    if not given:
        raise ValueError("levels is empty: give at least one latent's number of values")
    for i, level in enumerate(given):
        if not is_int(level):
            raise TypeError(f"levels[{i}]={level!r} is not an integer")
        if level < 2:
            raise ValueError(f"levels[{i}]={level}: every latent needs at least 2 values")
    if codebook_dim is not None and codebook_dim != len(given):
        raise ValueError(f"codebook_dim={codebook_dim} does not match the {len(given)} levels given")
    size = len(given) * max(given)
    _bound("levels", size, f"values in the table ({len(given):,} latents x max(levels) {max(given):,})", MAX_VALUES)
    return tuple(int(level) for level in given)


def check_arguments(
    levels,
    dim,
    commitment_loss_weight,
    quantization_loss_weight,
    num_codebooks,
    codebook_dim,
    keep_num_codebooks_dim,
    optimize_values,
    in_place_codebook_optimizer: Callable | None,
    channel_first,
    flat_indices,
    shared_values,
    track_usage=False,
) -> Arguments:
    """All of the constructor's checks, sizes first."""
    levels = check_levels(levels, codebook_dim)
    d = len(levels)
    c = _positive("num_codebooks", num_codebooks)
    _bound("num_codebooks", c * d, f"latent features ({c:,} codebooks x {d:,} latents)", MAX_FEATURES)
    dim = c * d if dim is None else _positive("dim", dim)
    _bound("dim", dim, "features", MAX_FEATURES)
    if dim != c * d:
        _bound("dim", dim * c * d, f"weights in each projection ({dim:,} features x {c * d:,})", MAX_PROJECTION)
    if keep_num_codebooks_dim is None:
        keep_num_codebooks_dim = c > 1
    if c > 1 and not keep_num_codebooks_dim:
        raise ValueError(f"num_codebooks={c} needs keep_num_codebooks_dim=True (got False)")
    weights = []
    for name, w in (
        ("commitment_loss_weight", commitment_loss_weight),
        ("quantization_loss_weight", quantization_loss_weight),
    ):
        w = 0.0 if w is None else w
        if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        weights.append(float(w))
    if channel_first not in (None, True, False):
        raise ValueError(f"channel_first must be None, True or False, got {channel_first!r}")
    if in_place_codebook_optimizer is not None and not optimize_values:
        raise ValueError(
            "in_place_codebook_optimizer needs optimize_values=True (got optimize_values=False): "
            "it steps the values, which are then a frozen buffer"
        )
    if in_place_codebook_optimizer is not None and not callable(in_place_codebook_optimizer):
        raise TypeError(
            "in_place_codebook_optimizer must be a callable taking the values and returning an "
            f"optimizer, e.g. lambda p: torch.optim.Adam(p, lr=1e-3); got {in_place_codebook_optimizer!r}"
        )
    if flat_indices and (sum(math.log2(level) for level in levels) > 64 or math.prod(levels) > INT64_CODES):
        raise ValueError(
            f"levels {levels_repr(levels)} give {size_repr(levels)[1:]} codes, more than int64 flat indices can "
            f"number (2**63); use flat_indices=False for per-latent indices"
        )
    for name, flag in (("shared_values", shared_values), ("track_usage", track_usage)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if shared_values and len(set(levels)) > 1:
        raise ValueError(
            "shared_values=True shares one set of values among all latents, so every latent needs the same "
            f"number of values; got levels {levels_repr(levels)}"
        )
    return Arguments(levels, dim, c, bool(keep_num_codebooks_dim), *weights, channel_first)


def check_input(x, dim: int, channel_first: bool | None) -> bool:
    """forward's input: a floating tensor with ``dim`` features; returns whether it is channel-first."""
    if not isinstance(x, Tensor):
        raise TypeError(f"LatentQuantize expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"LatentQuantize expects a floating point input, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(
            f"expected an input with a batch axis and a feature axis (ndim >= 2), got shape {tuple(x.shape)}"
        )
    first = x.ndim >= 4 if channel_first is None else channel_first
    axis = 1 if first else x.ndim - 1
    if x.shape[axis] != dim:
        layout = "channel-first" if first else "channel-last"
        raise ValueError(
            f"expected {dim} features on axis {axis} of the {layout} input of shape {tuple(x.shape)}, "
            f"got {x.shape[axis]}"
        )
    return first


def check_mask(mask, lead: tuple) -> None:
    """forward's ``mask``: a bool tensor over the input's positions (every axis but the features)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        found = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor (True: the position counts), got {found}")
    if tuple(mask.shape) != tuple(lead):
        raise ValueError(
            f"mask must have the input's shape less its feature axis, {tuple(lead)}, got {tuple(mask.shape)}"
        )


def check_index_tensor(indices, name: str) -> None:
    if not isinstance(indices, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {indices.dtype}")


def check_flat_indices(indices: Tensor, codebook_size: int) -> None:
    """Flat indices within 0 .. codebook_size - 1, else a ValueError naming the first bad one."""
    if torch.compiler.is_compiling() or not indices.numel():
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= codebook_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"index {bad} is out of range: flat indices run from 0 to {codebook_size - 1}{_nan_note(bad)}")


def check_level_indices(digits: Tensor, levels: Sequence[int], num_values: Tensor, name: str) -> None:
    """digits (..., d): each within its latent's levels, else a ValueError naming the first bad one."""
    d = len(levels)
    if digits.shape[-1:] != (d,):
        found = digits.shape[-1] if digits.ndim else 0
        raise ValueError(
            f"{name}: expected {d} per-latent indices on the last axis, got {found} (shape {tuple(digits.shape)})"
        )
    if torch.compiler.is_compiling() or digits.numel() == 0:
        return
    flat = digits.reshape(-1, d)
    lo, hi = flat.min(0).values, flat.max(0).values
    if not bool(((lo < 0) | (hi >= num_values.to(hi.device))).any()):  # one host sync when all is well
        return
    for i, level in enumerate(levels):
        if int(lo[i]) < 0 or int(hi[i]) >= level:
            bad = int(lo[i]) if int(lo[i]) < 0 else int(hi[i])
            raise ValueError(
                f"{name}: index {bad} for latent {i} is out of range, which has {level} values "
                f"(0..{level - 1}){_nan_note(bad)}"
            )


def _nan_note(index: int) -> str:
    return " (forward gives -1 for a NaN input)" if index == -1 else ""


def check_batch_shape(batch_shape) -> tuple[int, ...]:
    shape = (batch_shape,) if is_int(batch_shape) else batch_shape
    if (
        isinstance(shape, (str, bytes, Tensor))
        or not isinstance(shape, Sequence)
        or not all(is_int(s) and s >= 0 for s in shape)
    ):
        raise TypeError(f"batch_shape must be an int or a sequence of ints >= 0, got {batch_shape!r}")
    return tuple(int(s) for s in shape)


def levels_repr(levels: Sequence[int]) -> str:
    """[3, 5, 8] as is; lists of more than 8 as runs when shorter, e.g.
    '[10] * 12' or '[10] * 9 + [4] * 9'."""
    plain = str(list(levels)) if len(levels) <= 64 else ""
    if len(levels) <= 8:
        return plain
    runs: list[list[int]] = []
    for level in levels:
        if runs and runs[-1][0] == level:
            runs[-1][1] += 1
        else:
            runs.append([level, 1])
    compact = " + ".join(f"[{level}] * {k}" if k > 1 else f"[{level}]" for level, k in runs)
    if len(runs) > 8 and not plain:  # a long irregular list: its size and range
        compact = f"<{len(levels)} levels from {min(levels)} to {max(levels)}>"
    return compact if not plain or len(compact) < len(plain) else plain


def size_repr(levels: Sequence[int]) -> str:
    """'=60', '=10**12' or '~2.62e+14': codes per codebook, short."""
    log10 = sum(math.log10(level) for level in levels)
    if log10 < 9:
        return f"={math.prod(levels)}"
    if len(set(levels)) == 1:
        return f"={levels[0]}**{len(levels)}"
    return f"~{math.prod(levels):.3g}" if log10 < 300 else f"~10**{log10:.0f}"


def upgrade_state_dict(
    state_dict: dict, prefix: str, levels: Sequence[int], values: Tensor, num_values: Tensor, shared: bool
) -> str | None:
    """Check a state_dict's levels against the layer's and bring older forms to
    the current one, in place; an error message, or None. Per-latent entries
    (values_per_latent.0, ...), as ParameterList-based layers write them, are
    packed; state dicts from before num_values was saved load as they are
    (their levels cannot be checked)."""
    key, counts_key = prefix + "values", prefix + "num_values"
    found = state_dict.get(counts_key)
    if found is not None and found.tolist() != list(levels):
        return (
            f"{counts_key}: the state_dict holds values for levels {levels_repr(found.tolist())}, this layer has "
            f"levels {levels_repr(levels)}; build the layer with the checkpoint's levels"
        )
    held = state_dict.get(key)
    if held is not None and held.ndim != values.ndim:
        kinds = ("per-latent values (latents, values)", "one set of shared values (values,)")
        return (
            f"{key}: the state_dict holds {kinds[held.ndim == 1]} of shape {tuple(held.shape)}, this layer has "
            f"{kinds[shared]}; build the layer with shared_values={held.ndim == 1}"
        )
    if key not in state_dict and prefix + "values_per_latent.0" in state_dict:
        legacy = [state_dict.get(f"{prefix}values_per_latent.{i}") for i in range(len(levels))]
        lengths = [None if v is None else v.shape[0] for v in legacy]
        if lengths != list(levels) or f"{prefix}values_per_latent.{len(levels)}" in state_dict:
            return (
                f"{prefix}values_per_latent: the state_dict holds per-latent values of lengths "
                f"{lengths}, this layer has levels {list(levels)}"
            )
        packed = torch.zeros_like(values)
        for i, v in enumerate(legacy):
            packed[i, : v.shape[0]] = v
            del state_dict[f"{prefix}values_per_latent.{i}"]
        state_dict[key] = packed
    if found is None and key in state_dict:
        state_dict[counts_key] = num_values.clone()
    return None
