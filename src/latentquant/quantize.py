"""Latent quantization: a small learnable scalar codebook per latent.

Hsu, Dorrell, Whittington, Wu, Finn, "Disentanglement via Latent
Quantization", NeurIPS 2023 (arXiv 2305.18378). Every latent ``i`` owns
``L_i`` learnable values; each projected latent is replaced by its nearest
value, so the implicit codebook is the Cartesian product of the per-latent
value sets (``prod(L_i)`` codes, never built here).

einstein notation of the shape patterns
    b   batch
    e   input features (``dim``)
    c   codebooks (they share the values)
    d   latents per codebook (``codebook_dim``)
    n   positions per example of a channel-first input (spatial / temporal axes)
    p   all positions of a channel-last input (every axis but the last)
    k   kernel blocks: b * c (channel-first) or p * c (channel-last)

Every input is brought to one layout, ``z`` of shape ``(k, d, n)``, latents on
axis 1: a channel-first ``(b, e, ...)`` input as ``((b c), d, n)``, a
channel-last ``(..., e)`` one as ``((p c), d, 1)``, both views of a contiguous
input. The fused autograd kernel in ``latentquant._quantize_kernel`` (its
docstring states the math) quantizes that layout; it takes the projected
input and the layout's sizes and takes the view itself, so that the views in
and out cost no autograd nodes, and returns q in the shape it was given.

All values live in one ``(d, max L)`` tensor ``values`` (a parameter, or a
buffer with ``optimize_values=False``), row i holding latent i's values in its
first ``L_i`` slots; ``num_values`` (a buffer, saved with them) holds the
``L_i``. ``values_per_latent[i]`` is the view ``values[i, :L_i]``. Shared
values (``shared_values=True``) are one ``(L,)`` row, which the kernel sees
expanded to ``(d, L)`` (a view: autograd sums the rows' gradients).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from latentquant import _quantize_kernel as kernel

__all__ = ["LatentQuantize", "Return", "LossBreakdown"]

_INT64_CODES = 2**63  # flat indices 0 .. 2**63 - 1 fit in int64


class Return(NamedTuple):
    quantized: Tensor
    indices: Tensor
    loss: Tensor


class LossBreakdown(NamedTuple):
    quantization: Tensor
    commitment: Tensor


def _project(linear: nn.Module, z: Tensor) -> Tensor:
    """``linear`` over axis 1: (b, i, n) -> (b, o, n), one batched GEMM whatever
    the grad mode (torch.matmul folds differently with and without grad,
    which would change the rounding between forward and indices_to_codes)."""
    if not isinstance(linear, nn.Linear):
        return z
    b, _, n = z.shape
    weight = linear.weight.unsqueeze(0).expand(b, -1, -1)
    if linear.bias is None:
        return torch.bmm(weight, z)
    return torch.baddbmm(linear.bias.view(1, -1, 1).expand(b, -1, n), weight, z)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_levels(levels, codebook_dim) -> list[int]:
    if isinstance(levels, Tensor):
        levels = levels.tolist()
    if codebook_dim is not None and (not _is_int(codebook_dim) or codebook_dim < 1):
        raise ValueError(f"codebook_dim must be a positive integer, got {codebook_dim!r}")
    if isinstance(levels, (bool, str, bytes)):
        raise TypeError(f"levels must be an int or a list of ints, got {levels!r}")
    if _is_int(levels):
        if levels < 2:
            raise ValueError(f"levels={levels}: every latent needs at least 2 values")
        if codebook_dim is None:
            raise ValueError(f"levels={levels} is a single int: also pass codebook_dim, the number of latents")
        return [int(levels)] * codebook_dim
    try:
        levels = list(levels)
    except TypeError:
        raise TypeError(f"levels must be an int or a list of ints, got {levels!r}") from None
    if not levels:
        raise ValueError("levels is empty: give at least one latent's number of values")
    for i, level in enumerate(levels):
        if not _is_int(level):
            raise TypeError(f"levels[{i}]={level!r} is not an integer")
        if level < 2:
            raise ValueError(f"levels[{i}]={level}: every latent needs at least 2 values")
    if codebook_dim is not None and codebook_dim != len(levels):
        raise ValueError(f"codebook_dim={codebook_dim} does not match the {len(levels)} levels given ({levels})")
    return [int(level) for level in levels]


def _levels_repr(levels: Sequence[int]) -> str:
    """[3, 5, 8] as is; lists of more than 8 as runs when shorter, e.g.
    '[10] * 12' or '[10] * 9 + [4] * 9'."""
    plain = str(list(levels))
    if len(levels) <= 8:
        return plain
    runs: list[list[int]] = []
    for level in levels:
        if runs and runs[-1][0] == level:
            runs[-1][1] += 1
        else:
            runs.append([level, 1])
    compact = " + ".join(f"[{level}] * {k}" if k > 1 else f"[{level}]" for level, k in runs)
    return compact if len(compact) < len(plain) else plain


def _check_options(
    num_codebooks,
    keep_num_codebooks_dim,
    commitment_loss_weight,
    quantization_loss_weight,
    channel_first,
    optimize_values,
    in_place_codebook_optimizer,
) -> tuple[bool, dict[str, float]]:
    """The constructor's other arguments: (keep_num_codebooks_dim, the two loss weights)."""
    if not _is_int(num_codebooks) or num_codebooks < 1:
        raise ValueError(f"num_codebooks must be a positive integer, got {num_codebooks!r}")
    if keep_num_codebooks_dim is None:
        keep_num_codebooks_dim = num_codebooks > 1
    if num_codebooks > 1 and not keep_num_codebooks_dim:
        raise ValueError(f"num_codebooks={num_codebooks} needs keep_num_codebooks_dim=True (got False)")
    weights = {}
    for name, w in (
        ("commitment_loss_weight", commitment_loss_weight),
        ("quantization_loss_weight", quantization_loss_weight),
    ):
        w = 0.0 if w is None else w
        if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        weights[name] = float(w)
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
    return bool(keep_num_codebooks_dim), weights


def _check_index_tensor(indices, name: str) -> None:
    if not isinstance(indices, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {indices.dtype}")


def _size_repr(levels: Sequence[int]) -> str:
    """'=60', '=10**12' or '~2.62e+14': codes per codebook, short."""
    size = math.prod(levels)
    if size < 10**9:
        return f"={size}"
    return f"={levels[0]}**{len(levels)}" if len(set(levels)) == 1 else f"~{size:.3g}"


def _check_level_indices(digits: Tensor, levels: Sequence[int], num_values: Tensor, name: str) -> None:
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
                f"{name}: index {bad} for latent {i} is out of range, which has {level} values (0..{level - 1})"
            )


def _upgrade_state_dict(
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
            f"{counts_key}: the state_dict holds values for levels {found.tolist()}, this layer has "
            f"levels {list(levels)}; build the layer with the checkpoint's levels"
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


class _LatentValues(Sequence):
    """``values_per_latent``: latent i's values as a 1-D view of the packed table."""

    def __init__(self, module: LatentQuantize):
        self._module = module

    def __len__(self) -> int:
        return self._module.codebook_dim

    def __getitem__(self, i: int | slice) -> Tensor | list[Tensor]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        i = range(len(self))[i]  # negative indices; IndexError past the end
        if self._module.shared_values:
            return self._module.values[:]
        return self._module.values[i, : self._module.levels[i]]

    def __repr__(self) -> str:
        return f"values_per_latent({', '.join(str(len(v)) for v in self)} values)"


class LatentQuantize(nn.Module):
    r"""Latent quantization (Hsu et al., NeurIPS 2023).

    Each of the ``codebook_dim`` latents has its own learnable scalar values
    (``levels[i]`` of them, initialised to ``linspace(-0.5, 0.5, levels[i])``).
    The projected input ``z = project_in(x)`` is quantized latent by latent
    to the nearest value, ``q_i = argmin_{v in V_i} |z_i - v|``, and the output
    is the straight-through estimate ``project_out(z + sg(q - z))`` (its value
    is exactly ``project_out(q)``). In training mode the loss is

    .. math::
        \mathcal{L} = w_q \, \mathrm{mean}\big((\mathrm{sg}(z) - q)^2\big)
                    + w_c \, \mathrm{mean}\big((z - \mathrm{sg}(q))^2\big)

    where ``sg`` stops gradients: the quantization term (weight
    ``quantization_loss_weight``) trains the values, the commitment term
    (weight ``commitment_loss_weight``) trains whatever produced ``z``. In eval
    mode the loss is zero.

    Parameters
    ----------
    levels : int or sequence of int
        Values per latent, each >= 2. An int needs ``codebook_dim``.
    dim : int, optional
        Input features. Defaults to ``codebook_dim * num_codebooks``; when it
        differs, Linear ``project_in`` / ``project_out`` are added.
    commitment_loss_weight, quantization_loss_weight : float, default 0.1
    num_codebooks : int, default 1
        Codebooks side by side on the feature axis; they share the values.
    codebook_dim : int, optional
        Latents per codebook; must equal ``len(levels)`` for a list.
    keep_num_codebooks_dim : bool, optional
        Keep a codebook axis on the indices; required (default) when
        ``num_codebooks > 1``.
    optimize_values : bool, default True
        ``values`` is a parameter; otherwise a buffer (still in the state_dict).
    in_place_codebook_optimizer : callable, optional
        Builds an optimizer over ``[values]``, e.g. ``lambda p:
        torch.optim.Adam(p, lr=1e-3)``; needs ``optimize_values=True``. Each
        training-mode forward with grad enabled steps it once on
        ``mean((sg(z) - q)^2)`` and then quantizes with the new values; the
        returned output and loss carry no gradient to the values. Its state
        is not in the module's state_dict: save
        ``lq.in_place_codebook_optimizer.state_dict()`` alongside.
    channel_first : bool, optional
        Feature axis 1 (True) or last (False). By default inputs with 4 or more
        dimensions, ``(b, d, h, w)`` and ``(b, d, t, h, w)``, are channel-first
        and ``(b, d)``, ``(b, n, d)`` channel-last.
    projection_has_bias : bool, default True
    flat_indices : bool, default True
        One exact int64 mixed-radix index per position and codebook,
        ``sum_i slot_i * prod_{j<i} levels[j]`` (first latent least
        significant). False gives the value slot of every latent,
        ``(..., codebook_dim)``; needed when ``prod(levels) > 2**63``.
    shared_values : bool, default False
        One set of ``L`` learnable values shared by every latent (the
        authors' "global codebook", ``latents/global_quantized.py`` in
        kylehkhsu/latent_quantization); every level must then be ``L``.
        Losses, indices and everything else are as above, with ``V_i = V``.

    Attributes
    ----------
    values : Tensor (codebook_dim, max(levels)), or (L,) with shared_values
        All learned values; row i holds latent i's in its first ``levels[i]``
        slots (the rest is unused padding, zero). Shared values are one row.
    num_values : Tensor (codebook_dim,) int64
        The levels, a buffer saved with the values: a state_dict of other
        levels is refused on loading.
    values_per_latent : sequence of 1-D Tensor
        ``values_per_latent[i]`` is the view ``values[i, :levels[i]]`` (with
        shared values, ``values[:]`` for every i), built
        afresh on each access: not a Parameter or buffer of its own and not
        an autograd leaf (its gradient is ``values.grad[i, :levels[i]]``).
    codebook_size : int
        ``prod(levels)``, codes per codebook, exact.

    ``forward`` returns ``Return(quantized, indices, loss)``, or ``(Return,
    LossBreakdown(quantization, commitment))`` with ``return_loss_breakdown=True``.
    Indices name slots of ``values_per_latent``. Empty inputs, NaN and
    infinities: see docs/quantizer.md.

    References
    ----------
    K. Hsu, W. Dorrell, J. C. R. Whittington, J. Wu, C. Finn. Disentanglement
    via Latent Quantization. NeurIPS 2023. arXiv:2305.18378.
    """

    def __init__(
        self,
        levels: int | Sequence[int],
        dim: int | None = None,
        commitment_loss_weight: float | None = 0.1,
        quantization_loss_weight: float | None = 0.1,
        num_codebooks: int = 1,
        codebook_dim: int | None = None,
        keep_num_codebooks_dim: bool | None = None,
        optimize_values: bool = True,
        in_place_codebook_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        channel_first: bool | None = None,
        projection_has_bias: bool = True,
        flat_indices: bool = True,
        shared_values: bool = False,
    ):
        super().__init__()
        levels = _check_levels(levels, codebook_dim)
        if not isinstance(shared_values, bool):
            raise TypeError(f"shared_values must be True or False, got {shared_values!r}")
        if shared_values and len(set(levels)) > 1:
            raise ValueError(
                f"shared_values=True shares one set of values among all latents, so every latent needs the same "
                f"number of values; got levels {_levels_repr(levels)}"
            )
        keep_num_codebooks_dim, weights = _check_options(
            num_codebooks,
            keep_num_codebooks_dim,
            commitment_loss_weight,
            quantization_loss_weight,
            channel_first,
            optimize_values,
            in_place_codebook_optimizer,
        )

        self.levels = tuple(levels)
        self.codebook_dim = d = len(levels)
        self.num_codebooks = num_codebooks
        self.effective_codebook_dim = d * num_codebooks
        dim = self.effective_codebook_dim if dim is None else dim
        if not _is_int(dim) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.keep_num_codebooks_dim = bool(keep_num_codebooks_dim)
        self.channel_first = None if channel_first is None else bool(channel_first)
        self.commitment_loss_weight = weights["commitment_loss_weight"]
        self.quantization_loss_weight = weights["quantization_loss_weight"]
        self.optimize_values = bool(optimize_values)
        self.shared_values = shared_values
        self.codebook_size = math.prod(levels)  # per codebook, an exact Python int
        if flat_indices and self.codebook_size > _INT64_CODES:
            raise ValueError(
                f"levels {list(levels)} give {self.codebook_size} codes, more than int64 flat indices can "
                f"number (2**63); use flat_indices=False for per-latent indices"
            )
        self.flat_indices = bool(flat_indices)

        self.has_projections = self.dim != self.effective_codebook_dim
        if self.has_projections:
            self.project_in = nn.Linear(self.dim, self.effective_codebook_dim, bias=projection_has_bias)
            self.project_out = nn.Linear(self.effective_codebook_dim, self.dim, bias=projection_has_bias)
        else:
            self.project_in = self.project_out = nn.Identity()

        # the values, packed (d, max L), padding stored as 0 and never used; or one shared row (L,)
        lmax = max(levels)
        values = torch.zeros(lmax) if shared_values else torch.zeros(d, lmax)
        if self.optimize_values:
            self.values = nn.Parameter(values)
        else:
            self.register_buffer("values", values)
        # saved with the values, so that a state_dict of other levels is refused
        self.register_buffer("num_values", torch.tensor(levels, dtype=torch.int64))
        self._reset_values()

        # small constant tables, moved with the module, not saved
        basis = [math.prod(levels[:i]) for i in range(d)] if self.codebook_size <= _INT64_CODES else None
        # (d, 1): the mixed-radix weight of each latent's slot, shaped for the kernel's (k, d, n)
        basis = None if basis is None else torch.tensor(basis, dtype=torch.int64).view(d, 1)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_offsets", torch.arange(d, dtype=torch.int64) * lmax, persistent=False)
        equal = len(set(levels)) == 1
        pad = [[0.0 if s < level else math.inf for s in range(lmax)] for level in levels]
        self.register_buffer("_pad", None if equal else torch.tensor(pad), persistent=False)
        self.register_buffer("_last", None if equal else torch.tensor(levels, dtype=torch.int64) - 1, persistent=False)

        self.in_place_codebook_optimizer = None
        if in_place_codebook_optimizer is not None:
            self.in_place_codebook_optimizer = in_place_codebook_optimizer([self.values])

    # ------------------------------------------------------------------ values

    @property
    def values_per_latent(self) -> _LatentValues:
        """Indexable: ``values_per_latent[i]`` is latent i's 1-D tensor of values
        (a view of ``values``; in-place edits under ``no_grad`` change them)."""
        return _LatentValues(self)

    def _reset_values(self) -> None:
        with torch.no_grad():
            if self.shared_values:
                self.values.copy_(torch.linspace(-0.5, 0.5, self.levels[0]))
                return
            self.values.zero_()
            for i, level in enumerate(self.levels):
                self.values[i, :level] = torch.linspace(-0.5, 0.5, level)

    def reset_parameters(self) -> None:
        self._reset_values()
        if self.has_projections:
            self.project_in.reset_parameters()
            self.project_out.reset_parameters()

    def _values_table(self) -> Tensor:
        """The values as one (d, l) table, +inf past each latent's levels
        (shared values: the (l,) row, expanded to d rows without a copy)."""
        if self.shared_values:
            return self.values.expand(self.codebook_dim, -1)
        pad = self._buffers["_pad"]  # the dict, not nn.Module's attribute lookup, which shows on small inputs
        return self.values if pad is None else self.values + pad

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        error = _upgrade_state_dict(state_dict, prefix, self.levels, self.values, self.num_values, self.shared_values)
        if error:
            error_msgs.append(error)
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _index_basis(self) -> Tensor | None:
        """The mixed-radix basis for flat indices (which the constructor only
        allows where it exists), None for per-latent ones."""
        return self._buffers["_basis"] if self.flat_indices else None

    def _is_channel_first(self, ndim: int) -> bool:
        return ndim >= 4 if self.channel_first is None else self.channel_first

    # ------------------------------------------------------------------ layout

    def _to_kernel(self, x: Tensor, channel_first: bool) -> tuple[Tensor, tuple[int, int, int]]:
        """The caller's input -> (z, layout): z projected, in the caller's
        order, and the kernel layout (k, d, n) that its elements form
        (the kernel views z so: a copy only for a non-contiguous input)."""
        c, d = self.num_codebooks, self.codebook_dim
        if channel_first:  # 'b e ... -> b e n', projected, then 'b (c d) n -> (b c) d n'
            b, n = x.shape[0], math.prod(x.shape[2:])
            z = _project(self.project_in, x.reshape(b, self.dim, n)) if self.has_projections else x
            return z, (b * c, d, n)
        z = self.project_in(x) if self.has_projections else x  # '... (c d) -> (... c) d 1'
        return z, (math.prod(z.shape[:-1]) * c, d, 1)

    def _from_kernel(self, q: Tensor, shape: tuple, channel_first: bool, project_out: bool = True) -> Tensor:
        """q in z's shape (as ``_to_kernel`` gives z; ``b (c d) n`` or
        ``... (c d)`` will do) -> the caller's layout of ``shape`` (features:
        dim, or c * d without project_out)."""
        if project_out and self.has_projections:
            cd = self.effective_codebook_dim
            if channel_first:  # 'b (c d) n -> b e n'
                q = _project(self.project_out, q.reshape(shape[0], cd, math.prod(shape[2:])))
            else:  # '... (c d) -> ... e', as one (p, c d) matrix
                q = self.project_out(q.reshape(math.prod(shape[:-1]), cd))
        return q if q.shape == shape else q.reshape(shape)

    def _indices_to_caller(self, idx: Tensor, lead: tuple, channel_first: bool) -> Tensor:
        """Kernel indices, flat (k, n) or per-latent (k, d, n) -> (*lead, c, d),
        less the codebook axis unless kept and the latent axis for flat ones."""
        c, d = self.num_codebooks, self.codebook_dim
        if channel_first:
            idx = rearrange(idx, "(b c) ... n -> b n c ...", c=c)
        tail = ((c,) if self.keep_num_codebooks_dim else ()) + (() if self.flat_indices else (d,))
        shape = (*lead, *tail)
        return idx if idx.shape == shape else idx.reshape(shape)

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, return_loss_breakdown: bool = False):
        if not isinstance(x, Tensor):
            raise TypeError(f"LatentQuantize expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"LatentQuantize expects a floating point input, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(
                f"expected an input with a batch axis and a feature axis (ndim >= 2), got shape {tuple(x.shape)}"
            )
        channel_first = self._is_channel_first(x.ndim)
        axis = 1 if channel_first else x.ndim - 1
        if x.shape[axis] != self.dim:
            layout = "channel-first" if channel_first else "channel-last"
            raise ValueError(
                f"expected {self.dim} features on axis {axis} of the {layout} input of shape "
                f"{tuple(x.shape)}, got {x.shape[axis]}"
            )
        lead = (x.shape[0], *x.shape[2:]) if channel_first else x.shape[:-1]

        z, layout = self._to_kernel(x, channel_first)  # z's elements form (k, d, n) = layout
        projected_dtype = z.dtype
        table = self._values_table()
        dtype = z.dtype  # quantize in float32, or float64 when either is
        if dtype != table.dtype or dtype not in (torch.float32, torch.float64):
            dtype = torch.promote_types(torch.promote_types(z.dtype, table.dtype), torch.float32)
            z, table = z.to(dtype), table.to(dtype)
        step = self.training and torch.is_grad_enabled() and self.in_place_codebook_optimizer is not None
        if step:
            self._step_values(z, layout)
            table = self._values_table().detach().to(dtype)
        elif not self.training and torch.is_grad_enabled():
            table = table.detach()

        config = (self.quantization_loss_weight, self.commitment_loss_weight, self.training, return_loss_breakdown)
        q, indices, loss, *parts = kernel.quantize(
            z, layout, table, self._index_basis(), self._buffers["_last"], config, self._buffers["_offsets"]
        )

        if q.dtype != projected_dtype:
            q = q.to(projected_dtype)
        quantized = self._from_kernel(q, x.shape, channel_first)
        if quantized.dtype != x.dtype:
            quantized = quantized.to(x.dtype)
        out = Return(quantized, self._indices_to_caller(indices, lead, channel_first), loss)
        return (out, LossBreakdown(*parts)) if return_loss_breakdown else out

    def _step_values(self, z: Tensor, layout: tuple) -> None:
        """One step of ``in_place_codebook_optimizer`` on mean((sg(z) - q)^2).
        Its gradient is written in closed form (no autograd graph, no graph
        break under torch.compile); the values' ``.grad`` is left as it was."""
        with torch.no_grad():
            grad = kernel.quantization_grad(z.reshape(layout), self._values_table().to(z.dtype), self._last)
            if self.shared_values:  # the d rows of the expanded table are one row
                grad = grad.sum(0)
            held, self.values.grad = self.values.grad, grad.to(self.values.dtype)
            self.in_place_codebook_optimizer.step()
            self.values.grad = held

    # ------------------------------------------------------------------ indices

    def _require_flat(self, what: str) -> None:
        if self._basis is None:
            raise ValueError(f"{what} needs flat indices, but {self.codebook_size} codes do not fit int64")

    def indices_to_level_indices(self, indices: Tensor) -> Tensor:
        """Flat indices (...) -> per-latent value slots (..., codebook_dim)."""
        self._require_flat("indices_to_level_indices")
        _check_index_tensor(indices, "indices")
        indices = indices.long()
        if not torch.compiler.is_compiling() and indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.codebook_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"index {bad} is out of range: flat indices run from 0 to {self.codebook_size - 1}")
        return torch.div(indices.unsqueeze(-1), self._basis.view(-1), rounding_mode="floor") % self.num_values

    def level_indices_to_indices(self, level_indices: Tensor) -> Tensor:
        """Per-latent value slots (..., codebook_dim) -> exact int64 flat indices (...)."""
        self._require_flat("level_indices_to_indices")
        _check_index_tensor(level_indices, "level_indices")
        _check_level_indices(level_indices, self.levels, self.num_values, "level_indices")
        return (level_indices.long() * self._basis.view(-1)).sum(-1)

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Decode indices (as forward returns them) with the current values.

        Returns the codes in forward's output layout: ``(b, dim, ...)`` for
        channel-first inputs, ``(..., dim)`` otherwise (``c * d`` features
        instead of ``dim`` with ``project_out=False``). In eval mode this equals
        forward's ``quantized`` exactly, in the module's dtype (forward casts
        to the input's).
        """
        _check_index_tensor(indices, "indices")
        c, d = self.num_codebooks, self.codebook_dim
        if self.flat_indices:
            flat = indices if self.keep_num_codebooks_dim else indices.unsqueeze(-1)
            if flat.ndim == 0 or flat.shape[-1] != c:
                raise ValueError(f"expected {c} codebook indices on the last axis, got shape {tuple(indices.shape)}")
            digits = self.indices_to_level_indices(flat)  # (..., c, d)
        else:
            digits = indices if self.keep_num_codebooks_dim else indices.unsqueeze(-2)
            _check_level_indices(digits, self.levels, self.num_values, "indices")
            if digits.ndim < 2 or digits.shape[-2] != c:
                raise ValueError(f"expected {c} codebooks on axis -2, got shape {tuple(indices.shape)}")
        codes = self._values_table().reshape(-1)[digits.long() + self._offsets]  # (*lead, c, d)
        lead = tuple(codes.shape[:-2])
        features = self.dim if project_out else c * d
        channel_first = self._is_channel_first(len(lead) + 1) and len(lead) >= 1
        if channel_first:
            q = rearrange(codes, "b ... c d -> b (c d) (...)")
            shape = (lead[0], features, *lead[1:])
        else:
            q = rearrange(codes, "... c d -> ... (c d)")
            shape = (*lead, features)
        # contiguous, as forward's codes: a transposed GEMM operand would round differently
        return self._from_kernel(q.contiguous(), shape, channel_first, project_out)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Indices of the nearest codes, ``codes`` channel-last in latent space
        (``(..., num_codebooks * codebook_dim)``, before ``project_out``)."""
        if not isinstance(codes, Tensor) or not codes.is_floating_point():
            raise TypeError(
                f"codes must be a floating point tensor, got {getattr(codes, 'dtype', type(codes).__name__)}"
            )
        features = self.effective_codebook_dim
        if codes.ndim == 0 or codes.shape[-1] != features:
            found = codes.shape[-1] if codes.ndim else 0
            raise ValueError(
                f"expected {features} code features on the last axis, got {found} (shape {tuple(codes.shape)})"
            )
        with torch.no_grad():
            table = self._values_table()
            dtype = torch.promote_types(torch.promote_types(codes.dtype, table.dtype), torch.float32)
            z = rearrange(codes.to(dtype), "... (c d) -> (... c) d 1", c=self.num_codebooks)
            _, pos, perm = kernel.nearest(z, table.to(dtype), self._last)
            idx = kernel.indices(pos, perm, self._index_basis())
        return self._indices_to_caller(idx, tuple(codes.shape[:-1]), channel_first=False)

    # ------------------------------------------------------------------ sampling

    def sample(
        self, batch_shape: int | Sequence[int], *, project_out: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Codes drawn uniformly from each latent's values, channel-last
        ``(*batch_shape, dim)`` (``c * d`` features with ``project_out=False``);
        differentiable with respect to the values, e.g. a generator's prior."""
        shape = (batch_shape,) if _is_int(batch_shape) else batch_shape
        if (
            isinstance(shape, (str, bytes, Tensor))
            or not isinstance(shape, Sequence)
            or not all(_is_int(s) and s >= 0 for s in shape)
        ):
            raise TypeError(f"batch_shape must be an int or a sequence of ints >= 0, got {batch_shape!r}")
        shape = tuple(int(s) for s in shape)
        c, d = self.num_codebooks, self.codebook_dim
        table = self._values_table()
        if generator is None:  # rand(generator=None) rejects symbolic sizes under torch.compile
            u = torch.rand(*shape, c, d, device=table.device)
        else:
            u = torch.rand(*shape, c, d, generator=generator, device=table.device)
        slots = torch.minimum((u * self.num_values).long(), self.num_values - 1)
        codes = table.reshape(-1)[slots + self._offsets].reshape(*shape, c * d)
        return self.project_out(codes) if project_out else codes

    def extra_repr(self) -> str:
        parts = [
            f"levels={_levels_repr(self.levels)}",
            f"dim={self.dim}",
            f"num_codebooks={self.num_codebooks}",
            f"codebook_size{_size_repr(self.levels)}",
            f"flat_indices={self.flat_indices}",
            f"optimize_values={self.optimize_values}",
            *(["shared_values=True"] if self.shared_values else []),
            f"quantization_loss_weight={self.quantization_loss_weight}",
            f"commitment_loss_weight={self.commitment_loss_weight}",
        ]
        if self.in_place_codebook_optimizer is not None:
            parts.append(f"in_place_codebook_optimizer={type(self.in_place_codebook_optimizer).__name__}")
        if self.channel_first is not None:
            parts.append(f"channel_first={self.channel_first}")
        return ", ".join(parts)
