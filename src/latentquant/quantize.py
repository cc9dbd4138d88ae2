"""Latent quantization: a small learnable scalar codebook per latent.

Hsu, Dorrell, Whittington, Wu, Finn, "Disentanglement via Latent
Quantization", NeurIPS 2023 (arXiv 2305.18378). Every latent ``i`` owns
``L_i`` learnable values; each projected latent is replaced by its nearest
value, so the implicit codebook is the Cartesian product of the per-latent
value sets (``prod(L_i)`` codes, never materialized here).

einstein notation used in the shape comments
    b   batch
    n   positions per example (flattened sequence / spatial / temporal axes)
    p   all positions, b * n
    c   codebooks (the values are shared between codebooks)
    d   latents per codebook (``codebook_dim``)
    l   values per latent, padded to the largest level with +inf
    k   kernel batch: b * c, p * c or c, by layout (see LatentQuantize.forward)

Design
------
All values live in one ``(d, l)`` tensor ``values`` (an ``nn.Parameter``, or
a persistent buffer when ``optimize_values=False``): row i holds latent i's
``L_i`` values, the rest of the row is unused padding. ``values_per_latent[i]``
is the 1-D view ``values[i, :L_i]``. One tensor means one leaf for autograd
and optimizers (the per-latent ``ParameterList`` of other implementations
costs a stack in forward and one gradient accumulation per latent in
backward, a third of the layer's time on small inputs), and a state_dict
entry ``values`` that follows ``.to()`` / ``.double()`` in both modes; state
dicts with per-latent ``values_per_latent.{i}`` entries still load. Each
forward uses that table directly (equal levels) or with +inf added on the
padding.

Nearest-value assignment is exact and never builds an ``(N, d, l)``
temporary beyond a fixed small cap: small inputs take one argmin over the
distances (capped at ``_ROWS_MAX_DISTANCES`` elements; three ops, no sort),
larger ones sort the tiny table and count, per latent, the sorted midpoints
below ``z`` with ``l - 1`` vectorized comparison passes (on CPU cheaper than
a binary search for so few values). The sort permutation maps sorted
positions back to the value slots, so indices always name a slot of
``values_per_latent`` even after training has reordered the values.

Training goes through one ``torch.autograd.Function`` that computes the
quantized values, the indices and the shared squared error in its forward,
and in its backward both the straight-through gradient for ``z`` plus the
commitment term, and the values' gradient by a per-latent ``scatter_add``
over the assigned slots.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["LatentQuantize", "Return", "LossBreakdown"]

_INT64_CODES = 2**63  # flat indices 0 .. 2**63 - 1 fit in int64


class Return(NamedTuple):
    quantized: Tensor
    indices: Tensor
    loss: Tensor


class LossBreakdown(NamedTuple):
    quantization: Tensor
    commitment: Tensor


# ----------------------------------------------------------------------------
# the kernel. Two layouts of the projected latents z:
#   rows    (r, d)     r = p * c rows of d latents; small inputs only
#   planes  (k, d, n)  latents on axis 1, long rows n; everything else
# and two nearest-value searches, both exact:
#   rows:   argmin over the (r, d, l) distances. Three ops and no sort: the
#           cheapest for small inputs, where each op's fixed cost dominates.
#           The temporary is capped at _ROWS_MAX_DISTANCES elements.
#   planes: count the sorted midpoints below z, one comparison pass per
#           midpoint; no (N, d, l) temporary, and on CPU cheaper than a binary
#           search (``torch.searchsorted`` costs ~10 ns per element).

_ROWS_MAX_DISTANCES = 65536


def _lookup_rows(z: Tensor, table: Tensor, basis: Tensor | None, last: Tensor | None):
    """z (r, d), table (d, l) -> q (r, d), indices (r,) or (r, d), slots (r, d).

    Ties go to the lowest slot (argmin). ``last`` (d,) clamps slots onto each
    latent's own values, where +inf padding and an infinite z would give NaN.
    """
    slots = (z.unsqueeze(-1) - table).abs_().argmin(-1)  # (r, d, l) -> (r, d)
    if last is not None:
        slots = torch.minimum(slots, last)
    q = torch.gather(table.t(), 0, slots)
    indices = slots if basis is None else (slots * basis).sum(-1)
    return q, indices, slots


def _search(z: Tensor, mids: Tensor) -> Tensor:
    """Sorted position of each z among its latent's values: the number of that
    latent's midpoints strictly below z. z (k, d, n), mids (d, l-1) -> (k, d, n) int64.

    Comparisons are written into preallocated buffers of z's dtype (bool
    outputs are several times slower on CPU). NaN counts no midpoint.
    Exact while l < 2**24.
    """
    m = mids.shape[1]
    if m == 0:
        return torch.zeros(z.shape, dtype=torch.int64, device=z.device)
    count = torch.gt(z, mids[:, :1], out=torch.empty_like(z))
    if m > 1:
        scratch = torch.empty_like(z)
        for j in range(1, m):
            count.add_(torch.gt(z, mids[:, j : j + 1], out=scratch))
    return count.long()


def _lookup_planes(z: Tensor, table: Tensor, basis: Tensor | None):
    """z (k, d, n), table (d, l) -> q (k, d, n), indices (k, n) or (k, d, n),
    sorted positions (k, d, n), perm (d, l) from sorted positions to slots.

    The table is sorted first, so values left unsorted by training are fine;
    ``perm`` maps positions back to slots of ``values_per_latent``. Ties (z on
    a midpoint) go to the lower value.
    """
    sorted_values, perm = torch.sort(table, dim=-1, stable=True)
    mids = (sorted_values[:, 1:] + sorted_values[:, :-1]) * 0.5  # +inf on padding
    pos = _search(z, mids)
    shape = (z.shape[0],) + table.shape
    q = torch.gather(sorted_values.expand(shape), 2, pos)
    codes = perm if basis is None else perm * basis.unsqueeze(-1)
    codes = torch.gather(codes.expand(shape), 2, pos)
    return q, (codes if basis is None else codes.sum(1)), pos, perm


def _lookup(z: Tensor, table: Tensor, basis: Tensor | None, last: Tensor | None):
    if z.ndim == 2:
        return _lookup_rows(z, table, basis, last) + (None,)
    return _lookup_planes(z, table, basis)


def _scalar_sum(a: Tensor | None, wa: float, b: Tensor | None, wb: float) -> Tensor | None:
    """a * wa + b * wb for optional 0-d gradients (None is zero)."""
    if a is None:
        return None if b is None else b * wb
    return a * wa if b is None else a * wa + b * wb


class _QuantizeFn(torch.autograd.Function):
    """Fused latent quantization with both losses of the paper.

    Inputs: ``z`` in a kernel layout (rows or planes) and the compute dtype;
    ``table`` (d, l) of values (+inf padding); ``basis`` (d,) int64 for flat
    indices or None for per-latent slots; ``last`` (see ``_lookup_rows``);
    ``config`` = (quantization weight, commitment weight, with_loss,
    breakdown), where ``with_loss=False`` skips the losses (eval mode with
    gradients). One tuple: ``apply`` inspects every argument, which costs on
    small inputs.

    Outputs: ``q`` (like z), the indices, ``loss`` and, with ``breakdown``,
    ``quantization`` and ``commitment``. With e = z - q and N = z.numel(),
    quantization = commitment = sum(e^2) / N.

    Gradients: q passes straight through to z. The commitment terms reach z
    only, as 2 e / N; the quantization terms reach the values only, as
    -2 e / N summed over the positions assigned to each value.
    """

    @staticmethod
    def forward(ctx, z, table, basis, last, config):
        quant_weight, commit_weight, with_loss, breakdown = config
        q, indices, pos, perm = _lookup(z, table, basis, last)
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)
        ctx.with_loss = with_loss
        if not with_loss:
            loss = z.new_zeros(())
            return (q, indices, loss, loss.clone(), loss.clone()) if breakdown else (q, indices, loss)
        err = z - q
        flat_err = err.view(-1)
        sse = torch.dot(flat_err, flat_err)
        ctx.save_for_backward(err, pos, perm)
        ctx.weights = (quant_weight, commit_weight)
        ctx.table_width = table.shape[1]
        count = max(z.numel(), 1)  # an empty input: sse = 0, so the losses are 0
        loss = sse * ((quant_weight + commit_weight) / count)
        if breakdown:
            mse = sse / count
            return q, indices, loss, mse, mse.clone()
        return q, indices, loss

    @staticmethod
    def backward(ctx, grad_q, grad_indices, grad_loss, grad_quant=None, grad_commit=None):
        # gradients are not materialized: None stands for zero
        if not ctx.with_loss:
            return grad_q, None, None, None, None
        err, pos, perm = ctx.saved_tensors
        quant_weight, commit_weight = ctx.weights
        scale = 2.0 / max(err.numel(), 1)
        grad_z = grad_table = None
        if ctx.needs_input_grad[0]:
            if grad_commit is None and grad_loss is not None and grad_q is not None:
                grad_z = torch.addcmul(grad_q, err, grad_loss, value=commit_weight * scale)
            else:
                w = _scalar_sum(grad_loss, commit_weight * scale, grad_commit, scale)
                if w is None:
                    grad_z = grad_q
                elif grad_q is None:
                    grad_z = err * w
                else:
                    grad_z = torch.addcmul(grad_q, err, w)
        if ctx.needs_input_grad[1]:
            w = _scalar_sum(grad_loss, -quant_weight * scale, grad_quant, -scale)
            if w is None:
                return grad_z, None, None, None, None
            d = err.shape[1]
            if perm is None:
                # rows: pos are the slots already; an (l, d) buffer
                sums = err.new_zeros(ctx.table_width, d).scatter_add_(0, pos, err)
                grad_table = sums.t().mul_(w)
            else:
                # planes: per (latent, sorted position) sums of the errors,
                # a (k, d, l) buffer with l <= n; then back to value slots
                sums = err.new_zeros(err.shape[0], d, perm.shape[1]).scatter_add_(2, pos, err).sum(0)
                grad_table = torch.empty_like(sums).scatter_(1, perm, sums.mul_(w))
        return grad_z, grad_table, None, None, None


def _linear_channel_first(z: Tensor, linear: nn.Linear) -> Tensor:
    """nn.Linear applied over axis 1 of (b, i, n), giving (b, o, n) without a
    transpose. One batched GEMM whatever the grad mode (torch.matmul folds
    differently with and without grad, which would change the rounding)."""
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
    if isinstance(levels, bool) or isinstance(levels, (str, bytes)):
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


class _LatentValues(Sequence):
    """``values_per_latent``: latent i's values as a 1-D view of the packed table."""

    def __init__(self, module: "LatentQuantize"):
        self._module = module

    def __len__(self) -> int:
        return self._module.codebook_dim

    def __getitem__(self, i: int | slice) -> Tensor | list[Tensor]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        i = range(len(self))[i]  # negative indices; IndexError past the end
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

    Attributes
    ----------
    values : Tensor (codebook_dim, max(levels))
        All learned values; row i holds latent i's in its first ``levels[i]``
        slots (the rest is unused padding, zero).
    values_per_latent : sequence of 1-D Tensor
        ``values_per_latent[i]`` is the view ``values[i, :levels[i]]``, built
        afresh on each access: not a Parameter or buffer of its own and not
        an autograd leaf (its gradient is ``values.grad[i, :levels[i]]``).
    codebook_size : int
        ``prod(levels)``, codes per codebook, exact.

    Indices always name slots of ``values_per_latent``, whatever order
    training leaves the values in. An empty input gives empty outputs and a
    zero loss. A NaN or infinite latent gets an unspecified in-range index
    and its finite code; in training the loss and gradients turn non-finite. ``forward`` returns ``Return(quantized,
    indices, loss)``, or ``(Return, LossBreakdown(quantization, commitment))``
    with ``return_loss_breakdown=True``.

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
        channel_first: bool | None = None,
        projection_has_bias: bool = True,
        flat_indices: bool = True,
    ):
        super().__init__()
        levels = _check_levels(levels, codebook_dim)
        if not _is_int(num_codebooks) or num_codebooks < 1:
            raise ValueError(f"num_codebooks must be a positive integer, got {num_codebooks!r}")
        if keep_num_codebooks_dim is None:
            keep_num_codebooks_dim = num_codebooks > 1
        if num_codebooks > 1 and not keep_num_codebooks_dim:
            raise ValueError(f"num_codebooks={num_codebooks} needs keep_num_codebooks_dim=True (got False)")
        weights = {}
        for name, w in (("commitment_loss_weight", commitment_loss_weight), ("quantization_loss_weight", quantization_loss_weight)):
            w = 0.0 if w is None else w
            if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
            weights[name] = float(w)
        if channel_first not in (None, True, False):
            raise ValueError(f"channel_first must be None, True or False, got {channel_first!r}")

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

        # the values, packed: row i holds latent i's values in its first
        # levels[i] slots (the rest, padding, is stored as 0 and never used)
        lmax = max(levels)
        self._lmax = lmax
        self._equal_levels = len(set(levels)) == 1
        values = torch.zeros(d, lmax)
        if self.optimize_values:
            self.values = nn.Parameter(values)
        else:
            self.register_buffer("values", values)
        self._reset_values()

        # small constant tables, moved with the module, not saved
        basis = [math.prod(levels[:i]) for i in range(d)] if self.codebook_size <= _INT64_CODES else None
        self.register_buffer("_basis", None if basis is None else torch.tensor(basis, dtype=torch.int64), persistent=False)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_offsets", torch.arange(d, dtype=torch.int64) * lmax, persistent=False)
        pad = [[0.0 if s < level else math.inf for s in range(lmax)] for level in levels]
        self.register_buffer("_pad", None if self._equal_levels else torch.tensor(pad), persistent=False)
        last = None if self._equal_levels else torch.tensor(levels, dtype=torch.int64) - 1
        self.register_buffer("_last", last, persistent=False)

    # ------------------------------------------------------------------ values

    @property
    def values_per_latent(self) -> _LatentValues:
        """Indexable: ``values_per_latent[i]`` is latent i's 1-D tensor of values
        (a view of ``values``; in-place edits under ``no_grad`` change them)."""
        return _LatentValues(self)

    def _reset_values(self) -> None:
        with torch.no_grad():
            self.values.zero_()
            for i, level in enumerate(self.levels):
                self.values[i, :level] = torch.linspace(-0.5, 0.5, level)

    def reset_parameters(self) -> None:
        self._reset_values()
        if self.has_projections:
            self.project_in.reset_parameters()
            self.project_out.reset_parameters()

    def _values_table(self) -> Tensor:
        """The values as one (d, l) table, +inf past each latent's levels."""
        return self.values if self._pad is None else self.values + self._pad

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # accept per-latent entries (values_per_latent.0, ...), as written by
        # ParameterList-based implementations, and pack them
        key = prefix + "values"
        if key not in state_dict and prefix + "values_per_latent.0" in state_dict:
            packed = torch.zeros_like(self.values)
            for i in range(self.codebook_dim):
                packed[i, : self.levels[i]] = state_dict.pop(f"{prefix}values_per_latent.{i}")
            state_dict[key] = packed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _index_basis(self) -> Tensor | None:
        """The mixed-radix basis for flat indices, None for per-latent ones."""
        if self.flat_indices:
            self._require_flat("flat_indices=True")
            return self._basis
        return None

    def _is_channel_first(self, ndim: int) -> bool:
        return ndim >= 4 if self.channel_first is None else self.channel_first

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, return_loss_breakdown: bool = False):
        if not isinstance(x, Tensor):
            raise TypeError(f"LatentQuantize expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"LatentQuantize expects a floating point input, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"expected an input with a batch axis and a feature axis (ndim >= 2), got shape {tuple(x.shape)}")
        channel_first = self._is_channel_first(x.ndim)
        axis = 1 if channel_first else x.ndim - 1
        if x.shape[axis] != self.dim:
            layout = "channel-first" if channel_first else "channel-last"
            raise ValueError(
                f"expected {self.dim} features on axis {axis} of the {layout} input of shape {tuple(x.shape)}, "
                f"got {x.shape[axis]}"
            )
        b, c, d = x.shape[0], self.num_codebooks, self.codebook_dim

        # project in: z is (b, (c d), n) for channel-first input, (p, (c d)) otherwise
        if channel_first:
            lead = (b,) + tuple(x.shape[2:])
            n = math.prod(lead[1:])  # explicit: with b = 0 a -1 would be ambiguous
            z = x.reshape(b, self.dim, n)
            if self.has_projections:
                z = _linear_channel_first(z, self.project_in)
        else:
            lead = tuple(x.shape[:-1])
            z = x if x.ndim == 2 else x.reshape(-1, self.dim)
            if self.has_projections:
                z = self.project_in(z)
            n = 1
        table = self._values_table()
        z_dtype = z.dtype
        compute_dtype = torch.promote_types(torch.promote_types(z_dtype, table.dtype), torch.float32)
        if z_dtype != compute_dtype:
            z = z.to(compute_dtype)
        if table.dtype != compute_dtype:
            table = table.to(compute_dtype)

        # kernel layout, chosen to avoid copies where possible:
        #   "rows"    ((p c), d)     small inputs (channel-first ones transposed)
        #   "batched" ((b c), d, n)  channel-first maps with n >= max(64, l), in place
        #   "planes"  (c, d, p)      the rest, transposed once so that every
        #                            comparison pass runs over long rows
        if z.numel() * self._lmax <= _ROWS_MAX_DISTANCES:
            layout = "rows"
            if channel_first:
                zk = z.reshape(b, c, d, n).permute(0, 3, 1, 2).reshape(-1, d)
            else:
                zk = z if c == 1 else z.reshape(-1, d)
        elif channel_first and n >= max(64, self._lmax):
            layout, zk = "batched", z.reshape(b * c, d, n)
        elif channel_first:
            layout, zk = "planes", z.reshape(b, c, d, n).permute(1, 2, 0, 3).reshape(c, d, b * n)
        else:
            layout, zk = "planes", z.reshape(-1, c, d).permute(1, 2, 0).contiguous()

        training = self.training
        basis = self._index_basis()
        if torch.is_grad_enabled() and (zk.requires_grad or (training and table.requires_grad)):
            config = (self.quantization_loss_weight, self.commitment_loss_weight, training, return_loss_breakdown)
            outs = _QuantizeFn.apply(zk, table if training else table.detach(), basis, self._last, config)
            q, indices, loss = outs[:3]
            parts = outs[3:]
        else:
            q, indices, _, _ = _lookup(zk, table.detach(), basis, self._last)
            if training:
                err = (zk - q).view(-1)
                mse = torch.dot(err, err) / max(err.numel(), 1)
                loss = mse * (self.quantization_loss_weight + self.commitment_loss_weight)
                parts = (mse, mse.clone())
            else:
                loss = zk.new_zeros(())
                parts = (loss, loss)

        # back to the caller's layout, then project out
        if layout == "rows":
            if channel_first:
                q = q.view(b, n, c * d).transpose(1, 2)
            elif c > 1:
                q = q.view(-1, c * d)
        elif layout == "batched":
            q = q.view(b, c * d, n)
        elif channel_first:
            q = q.view(c, d, b, n).permute(2, 0, 1, 3)
        else:
            q = q.permute(2, 0, 1).reshape(-1, c * d)  # (c, d, p) -> (p, (c d))
        if channel_first:
            q = q.reshape(b, c * d, n)
        if self.has_projections:
            q = q.to(z_dtype).contiguous()  # what project_in produced: the projections' dtype
            q = _linear_channel_first(q, self.project_out) if channel_first else self.project_out(q)
        if q.dtype != x.dtype:
            q = q.to(x.dtype)
        quantized = q if q.shape == x.shape else q.reshape(x.shape)
        indices = self._indices_to_caller(indices, layout, lead, b, n)

        out = Return(quantized, indices, loss)
        if return_loss_breakdown:
            return out, LossBreakdown(*parts)
        return out

    def _indices_to_caller(self, indices: Tensor, layout: str, lead: tuple, b: int, n: int) -> Tensor:
        """Kernel-layout indices -> (*lead, c[, d]), without c unless kept."""
        c, d = self.num_codebooks, self.codebook_dim
        if self.flat_indices:
            # ((p c),), ((b c), n) or (c, p) -> (p, c)
            if layout == "batched":
                indices = indices.view(b, c, n).transpose(1, 2)
            elif layout == "planes":
                indices = indices.t()
            tail = (c,)
        else:
            # ((p c), d), ((b c), d, n) or (c, d, p) -> (p, c, d)
            if layout == "batched":
                indices = indices.view(b, c, d, n).permute(0, 3, 1, 2)
            elif layout == "planes":
                indices = indices.permute(2, 0, 1)
            tail = (c, d)
        if not self.keep_num_codebooks_dim:
            tail = tail[1:]
        shape = lead + tail
        return indices if indices.shape == shape else indices.reshape(shape)

    # ------------------------------------------------------------------ indices

    def _check_index_tensor(self, indices, name: str) -> None:
        if not isinstance(indices, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {indices.dtype}")

    def _check_level_indices(self, digits: Tensor, name: str) -> None:
        """digits (..., d): each within its latent's levels."""
        if digits.shape[-1:] != (self.codebook_dim,):
            found = digits.shape[-1] if digits.ndim else 0
            raise ValueError(
                f"{name}: expected {self.codebook_dim} per-latent indices on the last axis, "
                f"got {found} (shape {tuple(digits.shape)})"
            )
        if torch.compiler.is_compiling() or digits.numel() == 0:
            return
        flat = digits.reshape(-1, self.codebook_dim)
        lo, hi = flat.min(0).values, flat.max(0).values
        if not bool(((lo < 0) | (hi >= self._levels.to(hi.device))).any()):  # one host sync when all is well
            return
        for i, level in enumerate(self.levels):
            if int(lo[i]) < 0 or int(hi[i]) >= level:
                bad = int(lo[i]) if int(lo[i]) < 0 else int(hi[i])
                raise ValueError(f"{name}: index {bad} for latent {i} is out of range, which has {level} values (0..{level - 1})")

    def _require_flat(self, what: str) -> None:
        if self._basis is None:
            raise ValueError(f"{what} needs flat indices, but {self.codebook_size} codes do not fit int64")

    def indices_to_level_indices(self, indices: Tensor) -> Tensor:
        """Flat indices (...) -> per-latent value slots (..., codebook_dim)."""
        self._require_flat("indices_to_level_indices")
        self._check_index_tensor(indices, "indices")
        indices = indices.long()
        if not torch.compiler.is_compiling() and indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.codebook_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"index {bad} is out of range: flat indices run from 0 to {self.codebook_size - 1}")
        return torch.div(indices.unsqueeze(-1), self._basis, rounding_mode="floor") % self._levels

    def level_indices_to_indices(self, level_indices: Tensor) -> Tensor:
        """Per-latent value slots (..., codebook_dim) -> exact int64 flat indices (...)."""
        self._require_flat("level_indices_to_indices")
        self._check_index_tensor(level_indices, "level_indices")
        self._check_level_indices(level_indices, "level_indices")
        return (level_indices.long() * self._basis).sum(-1)

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Decode indices (as forward returns them) with the current values.

        Returns the codes in forward's output layout: ``(b, dim, ...)`` for
        channel-first inputs, ``(..., dim)`` otherwise (``c * d`` features
        instead of ``dim`` with ``project_out=False``). In eval mode this equals
        forward's ``quantized`` exactly, in the module's dtype (forward casts
        to the input's).
        """
        self._check_index_tensor(indices, "indices")
        c, d = self.num_codebooks, self.codebook_dim
        if self.flat_indices:
            flat = indices if self.keep_num_codebooks_dim else indices.unsqueeze(-1)
            if flat.ndim == 0 or flat.shape[-1] != c:
                raise ValueError(f"expected {c} codebook indices on the last axis, got shape {tuple(indices.shape)}")
            digits = self.indices_to_level_indices(flat)  # (..., c, d)
        else:
            digits = indices if self.keep_num_codebooks_dim else indices.unsqueeze(-2)
            self._check_level_indices(digits, "indices")
            if digits.ndim < 2 or digits.shape[-2] != c:
                raise ValueError(f"expected {c} codebooks on axis -2, got shape {tuple(indices.shape)}")
        table = self._values_table()
        codes = table.reshape(-1)[digits.long() + self._offsets]  # (..., c, d)
        codes = codes.reshape(*codes.shape[:-2], c * d)
        lead = codes.shape[:-1]
        channel_first = self._is_channel_first(len(lead) + 1)
        if channel_first and len(lead) >= 1:
            b = lead[0]
            codes = codes.reshape(b, math.prod(lead[1:]), c * d).transpose(1, 2).contiguous()  # (b, (c d), n)
            if project_out and self.has_projections:
                codes = _linear_channel_first(codes, self.project_out)
            return codes.reshape(b, codes.shape[1], *lead[1:])
        if project_out and self.has_projections:
            # contiguous, as in forward: per-latent indices from forward can be
            # a transposed view, and the gather keeps their strides; a
            # transposed GEMM operand would round differently
            codes = self.project_out(codes.reshape(-1, c * d).contiguous()).reshape(*lead, self.dim)
        return codes

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Indices of the nearest codes, ``codes`` channel-last in latent space
        (``(..., num_codebooks * codebook_dim)``, before ``project_out``)."""
        if not isinstance(codes, Tensor) or not codes.is_floating_point():
            raise TypeError(f"codes must be a floating point tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
        c, d = self.num_codebooks, self.codebook_dim
        if codes.ndim == 0 or codes.shape[-1] != c * d:
            raise ValueError(f"expected {c * d} code features on the last axis, got {codes.shape[-1] if codes.ndim else 0} (shape {tuple(codes.shape)})")
        lead = tuple(codes.shape[:-1])
        with torch.no_grad():
            table = self._values_table()
            dtype = torch.promote_types(torch.promote_types(codes.dtype, table.dtype), torch.float32)
            zk = codes.to(dtype).reshape(-1, d)  # ((p c), d)
            if zk.numel() * self._lmax > _ROWS_MAX_DISTANCES:
                zk = zk.t().unsqueeze(0).contiguous()  # (1, d, (p c)): planes
            _, idx, _, _ = _lookup(zk, table.to(dtype), self._index_basis(), self._last)
        if self.flat_indices:
            idx = idx.view(-1)  # ((p c),)
        else:
            idx = idx if idx.ndim == 2 else idx[0].t()  # ((p c), d)
        tail = ((c,) if self.keep_num_codebooks_dim else ()) + (() if self.flat_indices else (d,))
        return idx.reshape(lead + tail)

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_shape: int | Sequence[int], *, project_out: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Codes drawn uniformly from each latent's values, channel-last
        ``(*batch_shape, dim)`` (``c * d`` features with ``project_out=False``);
        differentiable with respect to the values, e.g. a generator's prior."""
        shape = (batch_shape,) if _is_int(batch_shape) else batch_shape
        if isinstance(shape, (str, bytes, Tensor)) or not isinstance(shape, Sequence) or not all(
            _is_int(s) and s >= 0 for s in shape
        ):
            raise TypeError(f"batch_shape must be an int or a sequence of ints >= 0, got {batch_shape!r}")
        shape = tuple(int(s) for s in shape)
        c, d = self.num_codebooks, self.codebook_dim
        table = self._values_table()
        if generator is None:  # rand(generator=None) rejects symbolic sizes under torch.compile
            u = torch.rand(*shape, c, d, device=table.device)
        else:
            u = torch.rand(*shape, c, d, generator=generator, device=table.device)
        slots = torch.minimum((u * self._levels).long(), self._levels - 1)
        codes = table.reshape(-1)[slots + self._offsets].reshape(*shape, c * d)
        return self.project_out(codes) if project_out else codes

    def extra_repr(self) -> str:
        size = self.codebook_size
        if size < 10**9:
            size = f"={size}"
        elif self._equal_levels:
            size = f"={self.levels[0]}**{self.codebook_dim}"
        else:
            size = f"~{size:.3g}"
        parts = [f"levels={_levels_repr(self.levels)}", f"dim={self.dim}", f"num_codebooks={self.num_codebooks}",
                 f"codebook_size{size}", f"flat_indices={self.flat_indices}", f"optimize_values={self.optimize_values}",
                 f"quantization_loss_weight={self.quantization_loss_weight}",
                 f"commitment_loss_weight={self.commitment_loss_weight}"]
        if self.channel_first is not None:
            parts.append(f"channel_first={self.channel_first}")
        return ", ".join(parts)
