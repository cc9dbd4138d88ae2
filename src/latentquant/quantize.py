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
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from latentquant import _quantize_kernel as kernel
from latentquant import _quantize_usage as value_usage
from latentquant._quantize_checks import (
    INT64_CODES,
    check_arguments,
    check_batch_shape,
    check_flat_indices,
    check_index_tensor,
    check_input,
    check_level_indices,
    check_mask,
    levels_repr,
    size_repr,
    upgrade_state_dict,
)
from latentquant._quantize_usage import USAGE_BUFFERS, Usage

__all__ = ["LatentQuantize", "Return", "LossBreakdown", "Usage", "reference_forward"]


class LatentQuantize(nn.Module):
    r"""Latent quantization (Hsu et al., NeurIPS 2023).

    Each of the ``codebook_dim`` latents has its own learnable scalar values
    (``levels[i]`` of them, initialised to ``linspace(-0.5, 0.5, levels[i])``).
    The projected input ``z = project_in(x)`` is quantized latent by latent
    to the nearest value, ``q_i = argmin_{v in V_i} |z_i - v|``, and the output
    is the straight-through estimate ``project_out(z + sg(q - z))`` (its value
    is exactly ``project_out(q)``). In training mode the loss is

        loss = w_q * mean((sg(z) - q)^2) + w_c * mean((z - sg(q))^2)

    where ``sg`` stops gradients: the quantization term (weight
    ``quantization_loss_weight``) trains the values, the commitment term
    (weight ``commitment_loss_weight``) trains whatever produced ``z``. In eval
    mode the loss is zero. ``reference_forward`` below is this definition in
    plain torch ops (an argmin per latent); the fused kernel that ``forward``
    runs is tested against it.

    Dtypes: the projections run in their parameters' dtype (the input is cast
    to it); the nearest-value search and both losses run in float32, or in
    float64 when the projected input or the values are float64 (never in a
    half type, also under ``torch.autocast``); ``quantized`` comes out in the
    input's dtype, the losses in the search's.

    NaN: a NaN latent has no nearest value. ``quantized`` is NaN there (after
    ``project_out``, at every feature of that position), its index is -1
    (a flat index is -1 when any of its latents is NaN), which
    ``indices_to_codes`` refuses, and in training the loss is NaN: never a
    finite, valid-looking code. (An infinite latent is quantized to an extreme
    value; its loss is infinite.)

    ``forward(x, return_loss_breakdown=False, mask=None)`` returns
    ``Return(quantized, indices, loss)``, or ``(Return, LossBreakdown(
    quantization, commitment))`` with ``return_loss_breakdown=True``. ``mask``,
    a bool tensor of the input's shape less its feature axis (True: the
    position counts), restricts both losses (means over the kept positions)
    and the values' gradient to the kept positions; every position is still
    quantized.
    Indices name slots of ``values_per_latent``. Empty inputs give empty
    outputs and a zero loss; see docs/quantizer.md.

    Sizes are bounded before anything is allocated (ValueError naming the
    bound): at most 2**16 latents, 2**26 values in all (latents x
    max(levels)), 2**24 features, 2**28 weights in each projection.

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
    track_usage : bool, default False
        Count each value's assignments in every forward; ``usage()`` reads
        them (counts, perplexity, dead values), ``reset_usage()`` zeroes the
        running total.

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

    Raises
    ------
    ValueError
        For levels below 2, a ``codebook_dim`` that does not match the
        levels, ``flat_indices=True`` with ``prod(levels) > 2**63``, unequal
        levels with ``shared_values``, ``num_codebooks > 1`` without
        ``keep_num_codebooks_dim``, negative or non-finite loss weights, an
        ``in_place_codebook_optimizer`` with ``optimize_values=False``, or a
        size past its bound. ``forward`` raises it for the wrong feature size
        or a mask of the wrong shape.
    TypeError
        For levels that are not integers or a ``channel_first`` other than
        None, True or False; ``forward`` for a non-floating input or a mask
        that is not bool.

    Examples
    --------
    >>> import torch
    >>> from latentquant import LatentQuantize
    >>> _ = torch.manual_seed(0)
    >>> lq = LatentQuantize(levels=[10] * 12, dim=64)  # 12 latents of 10 values; 64 -> 12 -> 64
    >>> quantized, indices, loss = lq(torch.randn(32, 64))
    >>> quantized.shape, indices.shape, indices.dtype, loss.shape
    (torch.Size([32, 64]), torch.Size([32]), torch.int64, torch.Size([]))
    >>> lq.codebook_size  # an exact int; nothing of that size is allocated
    1000000000000

    A channel-first feature map, with the two loss terms apart:

    >>> lq = LatentQuantize(levels=[8] * 6)
    >>> (q, idx, loss), parts = lq(torch.randn(2, 6, 4, 4), return_loss_breakdown=True)
    >>> q.shape, idx.shape, sorted(parts._asdict())
    (torch.Size([2, 6, 4, 4]), torch.Size([2, 4, 4]), ['commitment', 'quantization'])

    In eval mode the indices decode to the output exactly:

    >>> x = torch.randn(2, 6, 4, 4)
    >>> out = lq.eval()(x)
    >>> torch.equal(lq.indices_to_codes(out.indices), out.quantized)
    True

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
        track_usage: bool = False,
    ):
        super().__init__()
        args = check_arguments(
            levels,
            dim,
            commitment_loss_weight,
            quantization_loss_weight,
            num_codebooks,
            codebook_dim,
            keep_num_codebooks_dim,
            optimize_values,
            in_place_codebook_optimizer,
            channel_first,
            flat_indices,
            shared_values,
            track_usage,
        )
        self.levels = levels = args.levels
        self.codebook_dim = d = len(levels)
        self.num_codebooks = args.num_codebooks
        self.effective_codebook_dim = d * args.num_codebooks
        self.dim = args.dim
        self.keep_num_codebooks_dim = args.keep_num_codebooks_dim
        self.channel_first = args.channel_first
        self.commitment_loss_weight = args.commitment_loss_weight
        self.quantization_loss_weight = args.quantization_loss_weight
        self.optimize_values = bool(optimize_values)
        self.shared_values = shared_values
        self.flat_indices = bool(flat_indices)
        self.codebook_size = math.prod(levels)  # per codebook, an exact Python int
        # added to a flat index by a NaN latent (the kernel's count search), making it negative
        self._invalid_code = -self.codebook_size if d * self.codebook_size <= INT64_CODES else None

        self.has_projections = self.dim != self.effective_codebook_dim
        if self.has_projections:
            self.project_in = nn.Linear(self.dim, self.effective_codebook_dim, bias=projection_has_bias)
            self.project_out = nn.Linear(self.effective_codebook_dim, self.dim, bias=projection_has_bias)
        else:
            self.project_in = self.project_out = nn.Identity()

        # the values, packed (d, max L), padding stored as 0 and never used; or one shared row (L,)
        lmax, counts = max(levels), torch.tensor(levels, dtype=torch.int64)
        values = torch.zeros(lmax) if shared_values else torch.zeros(d, lmax)
        if self.optimize_values:
            self.values = nn.Parameter(values)
        else:
            self.register_buffer("values", values)
        # saved with the values, so that a state_dict of other levels is refused
        self.register_buffer("num_values", counts)
        self._reset_values()

        # small constant tables, moved with the module, not saved; read through self._buffers
        # (nn.Module's attribute lookup costs microseconds, which show on small inputs)
        basis = None  # (d, 1): the mixed-radix weight of each latent's slot, shaped for the kernel's (k, d, n)
        if self.codebook_size <= INT64_CODES:
            basis = torch.tensor([math.prod(levels[:i]) for i in range(d)], dtype=torch.int64).view(d, 1)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_offsets", torch.arange(d, dtype=torch.int64) * lmax, persistent=False)
        equal = len(set(levels)) == 1  # else each latent's slots past its levels are +inf in the table
        pad = torch.zeros(d, lmax).masked_fill_(torch.arange(lmax) >= counts[:, None], math.inf)
        self.register_buffer("_pad", None if equal else pad, persistent=False)
        self.register_buffer("_last", None if equal else counts - 1, persistent=False)

        # value usage (track_usage): the last forward's counts and a running total, (c, d, max L), not saved
        self.track_usage = track_usage
        shape = (args.num_codebooks, d, lmax)
        for name in USAGE_BUFFERS:
            self.register_buffer(name, torch.zeros(shape, dtype=torch.int64) if track_usage else None, persistent=False)

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
        return self.values if self._buffers["_pad"] is None else self.values + self._buffers["_pad"]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        error = upgrade_state_dict(state_dict, prefix, self.levels, self.values, self.num_values, self.shared_values)
        if error:
            error_msgs.append(error)
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _kernel_options(self, with_loss: bool, breakdown: bool, mask: Tensor | None = None) -> kernel.Options:
        constants = self._buffers
        return kernel.Options(  # positional, in the order of its fields (this runs every forward)
            self.quantization_loss_weight,
            self.commitment_loss_weight,
            with_loss,
            breakdown,
            constants["_basis"] if self.flat_indices else None,  # flat indices are only allowed where it exists
            constants["_last"],
            constants["_offsets"],
            self._invalid_code,
            mask,
        )

    def _is_channel_first(self, ndim: int) -> bool:
        return ndim >= 4 if self.channel_first is None else self.channel_first

    # ------------------------------------------------------------------ layout

    def _to_kernel(self, x: Tensor, channel_first: bool) -> tuple[Tensor, tuple[int, int, int]]:
        """The caller's input -> (z, layout): z projected, in the caller's
        order, and the kernel layout (k, d, n) that its elements form
        (the kernel views z so: a copy only for a non-contiguous input)."""
        c, d = self.num_codebooks, self.codebook_dim
        if self.has_projections and x.dtype != self.project_in.weight.dtype:
            x = x.to(self.project_in.weight.dtype)  # the projections run in their own dtype
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

    def _mask_to_kernel(self, mask: Tensor, channel_first: bool) -> Tensor:
        """The caller's position mask -> (k, 1, n), as the kernel lays out the positions (and codebooks)."""
        c = self.num_codebooks
        if channel_first:  # 'b ... -> b 1 1 n', repeated over c, '(b c) 1 n'
            b, n = mask.shape[0], math.prod(mask.shape[1:])
            return mask.reshape(b, 1, 1, n).expand(b, c, 1, n).reshape(b * c, 1, n)
        return mask.reshape(-1, 1).expand(-1, c).reshape(-1, 1, 1)  # '... -> (... c) 1 1'

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

    def forward(self, x: Tensor, return_loss_breakdown: bool = False, mask: Tensor | None = None):
        channel_first = check_input(x, self.dim, self.channel_first)
        lead = (x.shape[0], *x.shape[2:]) if channel_first else x.shape[:-1]
        if mask is not None:
            check_mask(mask, lead)
            mask = self._mask_to_kernel(mask.to(x.device), channel_first)

        z, layout = self._to_kernel(x, channel_first)  # z's elements form (k, d, n) = layout
        projected_dtype = z.dtype
        table = self._values_table()
        dtype = _search_dtype(z.dtype, table.dtype)
        if z.dtype != dtype:  # (a no-op .to() still costs microseconds)
            z = z.to(dtype)
        if table.dtype != dtype:
            table = table.to(dtype)
        if self.training and torch.is_grad_enabled() and self.in_place_codebook_optimizer is not None:
            self._step_values(z, layout, mask)
            table = self._values_table().detach().to(dtype)
        elif not self.training and torch.is_grad_enabled():
            table = table.detach()

        options = self._kernel_options(self.training, return_loss_breakdown, mask)
        q, indices, loss, *parts = kernel.quantize(z, table, layout, options)
        if self.track_usage:
            self._count_usage(indices, layout, mask)

        if q.dtype != projected_dtype:
            q = q.to(projected_dtype)
        quantized = self._from_kernel(q, x.shape, channel_first)
        if quantized.dtype != x.dtype:
            quantized = quantized.to(x.dtype)
        out = Return(quantized, self._indices_to_caller(indices, lead, channel_first), loss)
        return (out, LossBreakdown(*parts)) if return_loss_breakdown else out

    def _step_values(self, z: Tensor, layout: tuple, mask: Tensor | None) -> None:
        """One step of ``in_place_codebook_optimizer`` on mean((sg(z) - q)^2).
        Its gradient is written in closed form (no autograd graph, no graph
        break under torch.compile); the values' ``.grad`` is left as it was."""
        with torch.no_grad():
            table, last = self._values_table().to(z.dtype), self._buffers["_last"]
            grad = kernel.quantization_grad(z.reshape(layout), table, last, mask)
            if self.shared_values:  # the d rows of the expanded table are one row
                grad = grad.sum(0)
            held, self.values.grad = self.values.grad, grad.to(self.values.dtype)
            self.in_place_codebook_optimizer.step()
            self.values.grad = held

    # ------------------------------------------------------------------ usage

    def _count_usage(self, indices: Tensor, layout: tuple, mask: Tensor | None) -> None:
        with torch.no_grad():
            slots = indices
            if self.flat_indices:  # (k, n) -> per-latent slots (k, d, n), -1 where the index is
                flat = indices.unsqueeze(1)
                basis = self._buffers["_basis"]
                slots = torch.div(flat, basis, rounding_mode="floor") % self.num_values.view(-1, 1)
                slots = slots.masked_fill(flat < 0, kernel.INVALID)
            counts = value_usage.count(slots.reshape(layout), self.num_codebooks, max(self.levels), mask)
            self._buffers["last_usage_counts"].copy_(counts)
            self._buffers["usage_counts"].add_(counts)

    def usage(self, running: bool = True, all_ranks: bool = False) -> value_usage.Usage:
        """How the values are used (needs ``track_usage=True``): per codebook
        and latent, the assignment counts of each value, the perplexity
        exp(H) of their frequencies and the number of values never used, and
        the last two over all codebooks together. ``running``: since the last
        ``reset_usage()`` (else the last forward's). ``all_ranks``: summed over
        the processes of ``torch.distributed``'s default group (a collective:
        call it on every rank); the module's counts are left as they are."""
        if not self.track_usage:
            raise ValueError("usage() needs a layer built with track_usage=True")
        counts = self._buffers["usage_counts" if running else "last_usage_counts"].clone()
        if all_ranks and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        return value_usage.summarize(counts, self.num_values)

    def reset_usage(self) -> None:
        """Zero the running counts (e.g. after each logging step)."""
        if self.track_usage:
            self._buffers["usage_counts"].zero_()

    # ------------------------------------------------------------------ indices

    def _require_flat(self, what: str) -> None:
        if self._buffers["_basis"] is None:  # the codes do not fit int64
            raise ValueError(f"{what} needs flat indices, but {self.codebook_size} codes do not fit int64")

    def indices_to_level_indices(self, indices: Tensor) -> Tensor:
        """Flat indices (...) -> per-latent value slots (..., codebook_dim)."""
        self._require_flat("indices_to_level_indices")
        check_index_tensor(indices, "indices")
        indices = indices.long()
        check_flat_indices(indices, self.codebook_size)
        return (
            torch.div(indices.unsqueeze(-1), self._buffers["_basis"].view(-1), rounding_mode="floor") % self.num_values
        )

    def level_indices_to_indices(self, level_indices: Tensor) -> Tensor:
        """Per-latent value slots (..., codebook_dim) -> exact int64 flat indices (...)."""
        self._require_flat("level_indices_to_indices")
        check_index_tensor(level_indices, "level_indices")
        check_level_indices(level_indices, self.levels, self.num_values, "level_indices")
        return (level_indices.long() * self._buffers["_basis"].view(-1)).sum(-1)

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Decode indices (as forward returns them) with the current values.

        Returns the codes in forward's output layout: ``(b, dim, ...)`` for
        channel-first inputs, ``(..., dim)`` otherwise (``c * d`` features
        instead of ``dim`` with ``project_out=False``). In eval mode this equals
        forward's ``quantized`` exactly, in the module's dtype (forward casts
        to the input's).
        """
        check_index_tensor(indices, "indices")
        c, d = self.num_codebooks, self.codebook_dim
        if self.flat_indices:
            flat = indices if self.keep_num_codebooks_dim else indices.unsqueeze(-1)
            if flat.ndim == 0 or flat.shape[-1] != c:
                raise ValueError(f"expected {c} codebook indices on the last axis, got shape {tuple(indices.shape)}")
            digits = self.indices_to_level_indices(flat)  # (..., c, d)
        else:
            digits = indices if self.keep_num_codebooks_dim else indices.unsqueeze(-2)
            check_level_indices(digits, self.levels, self.num_values, "indices")
            if digits.ndim < 2 or digits.shape[-2] != c:
                raise ValueError(f"expected {c} codebooks on axis -2, got shape {tuple(indices.shape)}")
        codes = self._values_table().reshape(-1)[digits.long() + self._buffers["_offsets"]]  # (*lead, c, d)
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
            dtype = _search_dtype(codes.dtype, table.dtype)
            z = rearrange(codes.to(dtype), "... (c d) -> (... c) d 1", c=self.num_codebooks)
            options = self._kernel_options(with_loss=False, breakdown=False)
            _, idx, _, _ = kernel.search(z, table.to(dtype), options)
        return self._indices_to_caller(idx, tuple(codes.shape[:-1]), channel_first=False)

    # ------------------------------------------------------------------ sampling

    def sample(
        self, batch_shape: int | Sequence[int], *, project_out: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Codes drawn uniformly from each latent's values, channel-last
        ``(*batch_shape, dim)`` (``c * d`` features with ``project_out=False``);
        differentiable with respect to the values, e.g. a generator's prior."""
        shape = check_batch_shape(batch_shape)
        c, d = self.num_codebooks, self.codebook_dim
        table = self._values_table()
        if generator is None:  # rand(generator=None) rejects symbolic sizes under torch.compile
            u = torch.rand(*shape, c, d, device=table.device)
        else:
            u = torch.rand(*shape, c, d, generator=generator, device=table.device)
        slots = torch.minimum((u * self.num_values).long(), self.num_values - 1)
        codes = table.reshape(-1)[slots + self._buffers["_offsets"]].reshape(*shape, c * d)
        return self.project_out(codes) if project_out else codes

    def extra_repr(self) -> str:
        parts = [
            f"levels={levels_repr(self.levels)}",
            f"dim={self.dim}",
            f"num_codebooks={self.num_codebooks}",
            f"codebook_size{size_repr(self.levels)}",
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
        if self.track_usage:
            parts.append("track_usage=True")
        return ", ".join(parts)


class Return(NamedTuple):
    """What ``LatentQuantize.forward`` returns, a named tuple.

    Attributes
    ----------
    quantized : Tensor
        The straight-through output, in the input's shape, layout and dtype.
    indices : Tensor
        int64 codes: one flat index per position (and codebook), or with
        ``flat_indices=False`` one value slot per latent; -1 where a latent is NaN.
    loss : Tensor
        The scalar weighted sum of the two loss terms; zero in eval mode.

    Examples
    --------
    >>> import torch
    >>> from latentquant import LatentQuantize
    >>> out = LatentQuantize(levels=[5, 5, 5])(torch.randn(4, 3))
    >>> out.indices.tolist() == out[1].tolist()
    True
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor


class LossBreakdown(NamedTuple):
    """The two loss terms, unweighted, from ``forward(x, return_loss_breakdown=True)``.

    Attributes
    ----------
    quantization : Tensor
        ``mean((sg(z) - q)^2)``, the term that trains the values.
    commitment : Tensor
        ``mean((z - sg(q))^2)``, the term that trains what produced ``z``.

    Examples
    --------
    >>> import torch
    >>> from latentquant import LatentQuantize
    >>> lq = LatentQuantize(levels=[5, 5, 5], quantization_loss_weight=1.0, commitment_loss_weight=0.25)
    >>> (_, _, loss), parts = lq(torch.randn(4, 3), return_loss_breakdown=True)
    >>> torch.allclose(loss, parts.quantization + 0.25 * parts.commitment)
    True
    """

    quantization: Tensor
    commitment: Tensor


def reference_forward(
    lq: LatentQuantize, x: Tensor, digits: Tensor | None = None, mask: Tensor | None = None
) -> tuple[Return, LossBreakdown]:
    """``lq(x, return_loss_breakdown=True, mask=mask)`` written plainly: the
    definition the fused kernel is tested against (slow: one argmin per
    latent; without the in-place optimizer's step). ``digits`` (..., c, d)
    replaces the argmin's choice of slots (the tests pass it where two values
    are equally near)."""
    c, d, channel_first = lq.num_codebooks, lq.codebook_dim, check_input(x, lq.dim, lq.channel_first)
    xl = x.movedim(1, -1) if channel_first else x  # (..., e)
    z0 = lq.project_in(xl.to(lq.project_in.weight.dtype) if lq.has_projections else xl)  # (..., c d)
    z = z0.to(_search_dtype(z0.dtype, lq.values.dtype)).unflatten(-1, (c, d))  # (..., c, d)
    values = [(v if lq.training else v.detach()).to(z.dtype) for v in lq.values_per_latent]
    if digits is None:  # the nearest value of each latent
        digits = torch.stack([(z[..., i, None] - v).abs().argmin(-1) for i, v in enumerate(values)], -1).detach()
    nan = z.isnan()  # no nearest value: q NaN, index INVALID
    q = torch.stack([v[digits[..., i]] for i, v in enumerate(values)], -1).masked_fill(nan, math.nan)
    kept = torch.ones(z.shape[:-2], dtype=torch.bool, device=z.device) if mask is None else mask.to(z.device)
    kept = kept[..., None, None].expand(z.shape)  # the positions that count, over codebooks and latents
    mse = lambda e: (torch.where(kept, e, 0.0) ** 2).sum() / max(int(kept.sum()), 1)  # noqa: E731  (0 if none)
    quantization, commitment = mse(z.detach() - q), mse(z - q.detach())  # train the values, the input
    if not lq.training:
        quantization = commitment = z.new_zeros(())
    loss = lq.quantization_loss_weight * quantization + lq.commitment_loss_weight * commitment
    out = lq.project_out((z + (q - z).detach()).flatten(-2).to(z0.dtype)).to(x.dtype)  # straight through
    out = out.movedim(-1, 1) if channel_first else out
    indices = digits.masked_fill(nan, kernel.INVALID)
    if lq.flat_indices:  # mixed radix, the first latent least significant
        basis = torch.tensor([math.prod(lq.levels[:i]) for i in range(d)], device=digits.device)
        indices = (digits * basis).sum(-1).masked_fill(nan.any(-1), kernel.INVALID)
    if not lq.keep_num_codebooks_dim:
        indices = indices.squeeze(digits.ndim - 2)  # the codebook axis
    return Return(out, indices, loss), LossBreakdown(quantization, commitment)


def _search_dtype(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """float32, or float64 when either is: the dtype of the search and the losses."""
    return torch.float64 if torch.float64 in (a, b) else torch.float32


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
