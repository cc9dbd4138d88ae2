"""The fused kernel behind ``LatentQuantize`` (private).

It works on one layout only, which ``LatentQuantize`` reaches by the shape
patterns in ``quantize.py`` (the kernel takes the caller-side tensor and
the layout's sizes and views it so itself, which costs no autograd node):

    z      (k, d, n)   k blocks, d latents, n positions: ((b c), d, n) for
                       channel-first inputs, ((p c), d, 1) for channel-last ones
    table  (d, l)      latent i's values in its first levels[i] slots, +inf after

Forward. For every latent i and position, with N = z.numel():

    slot     = argmin_s |z_i - table[i, s]|                 the nearest value
    q_i      = table[i, slot]
    index    = sum_i slot_i * basis_i  (flat, mixed radix) or the slots themselves
    e        = z - q
    quantization = mean((sg(z) - q)^2) = sum(e^2) / N      (sg: stop gradient)
    commitment   = mean((z - sg(q))^2) = sum(e^2) / N
    loss     = w_q * quantization + w_c * commitment

and the straight-through output z + sg(q - z), whose value is q. Both terms
have the same value; they differ only in where their gradients go. With a
position mask (``Options.mask``, (k, 1, n), True where a position counts), e
is zero at the masked positions and N counts the kept elements only. A NaN
latent has no nearest value: q is NaN there and its index INVALID (-1; a flat
index is INVALID when any of its latents is NaN), so that no NaN comes out as a
finite, valid-looking code. ``latentquant.quantize.reference_forward`` writes
the forward with plain torch ops; the tests compare this kernel against it.

Backward, for upstream gradients G (output), g (loss), g_q and g_c (the two
terms of the breakdown; absent ones are zero):

    dz            = G + (2 / N) (w_c g + g_c) e
    dtable[i, s]  = -(2 / N) (w_q g + g_q) * sum of e_i over positions with slot_i = s

so the quantization term trains the values only and the commitment term only
what produced z. Under ``create_graph=True`` the backward recomputes e = z - q
from the saved z and table with differentiable ops (the slots held fixed, as
they are almost everywhere), so second derivatives are those of the backward
as a function of z, the table and the upstream gradients, as
``torch.autograd.gradgradcheck`` measures them, never silently zero: e.g.
d dz / dz = (2 / N) (w_c g + g_c), and d dz / dtable[i, s] = -(2 / N)
(w_c g + g_c) at the positions of slot s. (A reference written with
``.detach()`` drops that last term: the stop-gradient holds for the loss, not
for its gradient as a function of the values.)

The nearest value is found in one of two exact ways, both on the same layout:
small inputs take one argmin over the (k, d, n, l) distances (few ops; ties go
to the lowest slot), larger ones sort the tiny table and count, per latent,
the midpoints below z with one comparison pass per midpoint (no (k, d, n, l)
temporary; ties go to the lower value). The two differ only for z equally
near two values up to rounding. With n = 1 the passes run along k instead,
so that they never loop over rows of d, and the values' gradient is one
index_add over the flat (d * l) table.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

SMALL_DISTANCES = 65536  # the argmin search while k * d * n * l stays at most this
INVALID = -1  # the index of a NaN latent


class Options(NamedTuple):
    """What the kernel needs besides z and the table (all keyword-named)."""

    quantization_weight: float
    commitment_weight: float
    with_loss: bool  # training mode: the two terms and their gradients; else a zero loss
    breakdown: bool  # also return the two terms
    basis: Tensor | None  # (d, 1) int64 mixed-radix weights of flat indices; None: per-latent slots
    last: Tensor | None  # (d,) each latent's last slot, None when every latent has l values
    offsets: Tensor | None = None  # (d,) arange(d) * l, given to spare the backward an op
    # what a NaN latent's slot adds to a flat index, -(codes per codebook), so that the sum is negative;
    # None where d times that would overflow int64 (NaN flat indices are then found by a reduction)
    invalid_code: int | None = None
    # (k, 1, n) bool, True where a position counts: the losses average over the kept positions
    # only, and the masked ones add nothing to the values' gradient (None: every position counts)
    mask: Tensor | None = None


def _count_below(z: Tensor, mids: Tensor, mark: bool = True) -> Tensor:
    """Per latent, the number of midpoints strictly below z: z (k, d, n),
    mids (d, l - 1) -> (k, d, n) int64; a NaN z counts none and then l, the
    slot past the table (``mark=False``: none, for a caller that finds NaN
    itself). The passes write into float buffers (bool outputs are several
    times slower on CPU)."""
    count = torch.gt(z, mids[:, :1], out=torch.empty_like(z))
    scratch = torch.empty_like(z)
    for j in range(1, mids.shape[1]):
        count.add_(torch.gt(z, mids[:, j : j + 1], out=scratch))
    if mark and _may_hold_nan(z):
        count.add_(torch.ne(z, z, out=scratch), alpha=mids.shape[1] + 1)
    return count.long()


def _may_hold_nan(z: Tensor) -> bool:
    """False only where z surely holds no NaN: on the CPU, outside torch.compile,
    when its sum is not NaN (one reduction; elsewhere a host sync or a graph
    break would cost more than marking NaN unconditionally)."""
    return not _can_sync(z) or math.isnan(z.sum().item())


def _long_axis_last(t: Tensor) -> Tensor:
    """(k, d, 1) -> the view (1, d, k): channel-last inputs put their positions
    on k, and passes and sums are cheaper along the last axis."""
    return t.permute(2, 1, 0) if t.shape[2] == 1 else t  # 'k d 1 -> 1 d k'


def take(table: Tensor, pos: Tensor) -> Tensor:
    """``table[i, pos[j, i, m]]``: table (d, w), pos (k, d, n) -> (k, d, n). A channel-last
    ``pos`` (k, d, 1) that is the view of a (1, d, k) count is gathered in that layout, along
    its long contiguous axis, and comes back as the same kind of view (through the expanded
    (k, d, w) table the gather is several times slower on a CPU)."""
    k, d, n = pos.shape
    if n == 1 and k > 1 and pos.stride(0) == 1:
        return torch.gather(table.unsqueeze(0), 2, pos.permute(2, 1, 0)).permute(2, 1, 0)
    return torch.gather(table.expand(k, d, table.shape[1]), 2, pos)


def nearest(z: Tensor, table: Tensor, last: Tensor | None, mark: bool = True):
    """z (k, d, n), table (d, l) -> q (k, d, n), pos (k, d, n), perm (d, l) or (d, l + 1) or None.

    ``pos`` are slots of ``table`` when ``perm`` is None (a NaN z takes one;
    ``search`` marks it), else positions in the sorted table with ``perm``
    mapping them to slots, and position l, past the table, for a NaN z (its q
    NaN, its slot INVALID). ``last`` (d,) clamps slots onto each latent's own
    values (NaN or infinite z against +inf padding), None when every latent
    has l values. ``mark=False``: the count search gives a NaN z position 0
    (``search`` then leaves it to its caller).
    """
    k, (d, l) = z.shape[0], table.shape
    if z.numel() * l <= SMALL_DISTANCES:
        if z.shape[2] == 1:  # (k, d, 1) - (d, l) -> (k, d, l) -> (k, d, 1)
            pos = (z - table).abs_().argmin(-1, keepdim=True)
        else:  # (k, d, n, 1) - (d, 1, l) -> (k, d, n, l) -> (k, d, n)
            pos = (z.unsqueeze(-1) - table.unsqueeze(1)).abs_().argmin(-1)
        if last is not None:
            pos = torch.minimum(pos, last.unsqueeze(-1))
        return torch.gather(table.expand(k, d, l), 2, pos), pos, None
    sorted_table, perm = torch.sort(table, dim=-1, stable=True)
    mids = (sorted_table[:, 1:] + sorted_table[:, :-1]) * 0.5  # +inf past each latent's values
    if z.shape[2] == 1:  # channel-last inputs: the passes run along the long axis k
        pos = _count_below(_long_axis_last(z).contiguous(), mids, mark).permute(2, 1, 0)  # '1 d k -> k d 1'
    else:
        pos = _count_below(z.contiguous(), mids, mark)
    sorted_table = torch.cat([sorted_table, sorted_table.new_full((d, 1), math.nan)], 1)  # NaN z: q NaN
    perm = torch.cat([perm, perm.new_full((d, 1), INVALID)], 1)  # and slot INVALID
    return take(sorted_table, pos), pos, perm


def indices(pos: Tensor, perm: Tensor | None, basis: Tensor | None, invalid_code: int | None = None) -> Tensor:
    """Flat indices (k, n) with a mixed-radix ``basis`` (d, 1), else slots (k, d, n).
    With ``perm`` (d, l + 1), the last sorted position is a NaN latent's: its
    slot is INVALID, and it adds ``invalid_code`` to a flat index (its sum
    then negative, and clamped to INVALID)."""
    if perm is None:
        return pos if basis is None else (pos * basis).sum(1)
    codes = perm if basis is None else perm * basis  # (d, l + 1): sorted position -> code digit
    if basis is not None and invalid_code is not None:
        codes[:, -1] = invalid_code
    codes = take(codes, pos)
    if basis is None:
        return codes
    flat = codes.sum(1)
    return flat if invalid_code is None else flat.clamp_min_(INVALID)


def search(z: Tensor, table: Tensor, options: Options, mark: bool = True):
    """z (k, d, n) -> q, indices (as ``indices``), pos, perm; NaN latents give
    q = NaN and the index INVALID. ``mark=False`` looks for no NaN: a NaN
    latent then gets an in-range value and index, for a caller that finds
    out about NaN more cheaply itself (and searches again if it must)."""
    q, pos, perm = nearest(z, table, options.last, mark)
    basis = options.basis
    idx = indices(pos, perm, basis, options.invalid_code if mark else None)  # unmarked: no clamp either
    if perm is None:  # the argmin gave NaN an in-range slot: mark it
        if mark and _may_hold_nan(z):  # else one reduction instead of four ops
            nan = torch.isnan(z)
            q = q.masked_fill_(nan, math.nan)
            idx = idx.masked_fill(nan if basis is None else nan.any(1), INVALID)
    elif mark and basis is not None and options.invalid_code is None:  # flat indices of a huge codebook
        idx = idx.masked_fill_(q.sum(1).isnan(), INVALID)  # by a reduction
    return q, idx, pos, perm


def _can_sync(z: Tensor) -> bool:
    """Whether reading a scalar of z back to Python is cheap: on the CPU, outside torch.compile."""
    return z.is_cpu and not torch.compiler.is_compiling()


def _slot_sums(
    err: Tensor,
    pos: Tensor,
    perm: Tensor | None,
    width: int,
    offsets: Tensor | None,
    alpha: float,
    clean: bool = False,
) -> Tensor:
    """alpha times the per (latent, slot) sums of err over the positions
    assigned there: (d, l). Channel-last inputs add into the flat (d * l)
    table at ``offsets`` (d,) + slot; others go through a (k, d, l) buffer.
    NaN inputs are assigned no value and add to no sum: with ``perm`` (d, l +
    1), the sums run over l + 1 sorted positions and the last, theirs, is
    dropped; ``clean``: err surely holds no NaN. Differentiable (out of place)
    only under create_graph."""
    k, d, n = err.shape
    graph = torch.is_grad_enabled()
    if perm is not None:
        width, offsets = perm.shape[1], None
    elif not clean:  # the argmin gave NaN inputs a slot: they add nothing to it
        err = torch.nan_to_num(err, nan=0.0, posinf=math.inf, neginf=-math.inf)
    if n == 1:
        if offsets is None:
            offsets = torch.arange(d, device=err.device) * width
        at, src = (pos.reshape(k, d) + offsets).reshape(-1), err.reshape(-1)
        sums = err.new_zeros(d * width)
        if graph:
            sums = sums.index_add(0, at, src, alpha=alpha)
        else:
            sums.index_add_(0, at, src, alpha=alpha)
        sums = sums.view(d, width)
    else:
        sums = err.new_zeros(k, d, width)
        sums = (sums.scatter_add(2, pos, err) if graph else sums.scatter_add_(2, pos, err)).sum(0) * alpha
    if perm is None:
        return sums
    sums = sums[:, :-1]
    return torch.zeros_like(sums).scatter(1, perm[:, :-1], sums)


def _weighted(a: Tensor | None, wa: float, b: Tensor | None, wb: float) -> Tensor | None:
    """a * wa + b * wb for optional 0-d gradients (None is zero)."""
    if a is None:
        return None if b is None else b * wb
    return a * wa if b is None else a * wa + b * wb


class QuantizeFn(torch.autograd.Function):
    """The math of the module docstring for z viewed as ``layout`` (k, d, n):
    ``options.with_loss=False`` (eval mode) keeps only the straight-through
    gradient; ``options.breakdown`` adds the two terms as outputs."""

    @staticmethod
    def forward(ctx, z, table, layout, options):
        w_q, w_c, with_loss, breakdown = options[:4]
        ctx.shapes = shapes = (z.shape, layout)  # the caller's, the kernel's (k, d, n)
        ctx.offsets = options.offsets
        # training on the CPU: the sum of squares below tells whether z held a NaN, so the search
        # need not find out by a pass of its own (a NaN e makes it NaN; masked ones are zeroed)
        late = with_loss and options.mask is None and _can_sync(z)
        q, idx, pos, perm = search(z.reshape(layout), table, options, mark=not late)
        ctx.set_materialize_grads(False)
        ctx.with_loss = with_loss
        q = q.reshape(shapes[0])  # a copy where the count search left a channel-last view
        if not with_loss:
            ctx.mark_non_differentiable(idx)
            zero = z.new_zeros(())
            return (q, idx, zero, zero.clone(), zero.clone()) if breakdown else (q, idx, zero)
        err, count = _masked_error(z, q, layout, options.mask)  # in the caller's shape, as the gradients of z are
        sse = squared_error(err)
        ctx.clean = late and not math.isnan(sse.item())  # z surely holds no NaN
        if late and not ctx.clean:  # (rare) search again, marking NaN; e is NaN there either way
            q, idx, pos, perm = search(z.reshape(layout), table, options)
            q = q.reshape(shapes[0])  # a copy where the count search left a channel-last view
        ctx.mark_non_differentiable(idx)
        # a table without gradient is copied (it is tiny): the values may then
        # change in place before this backward runs (the in-place optimizer)
        ctx.save_for_backward(z, table if table.requires_grad else table.clone(), err, pos, perm)
        ctx.weights, ctx.mask, ctx.count = (w_q, w_c), options.mask, count
        if not breakdown:
            return q, idx, sse * ((w_q + w_c) / count)
        mse = sse / count
        return q, idx, mse * (w_q + w_c), mse, mse.clone()

    @staticmethod
    def backward(ctx, grad_q, _grad_idx, grad_loss, grad_quant=None, grad_commit=None):
        if not ctx.with_loss:
            return grad_q, None, None, None
        z, table, err, pos, perm = ctx.saved_tensors
        w_q, w_c = ctx.weights
        if ctx.mask is None:
            scale = 2.0 / ctx.count
        else:  # N is a tensor: fold 1 / N into the upstream gradients, the constants stay Python numbers
            scale, inv = 2.0, 1.0 / ctx.count
            grad_loss, grad_quant, grad_commit = (
                None if g is None else g * inv for g in (grad_loss, grad_quant, grad_commit)
            )
        if torch.is_grad_enabled():  # create_graph=True: e as a function of z and table
            slots = pos if perm is None else torch.gather(perm.expand(pos.shape[0], *perm.shape), 2, pos).clamp_(min=0)
            err = z - torch.gather(table.expand(pos.shape[0], *table.shape), 2, slots).view(z.shape)
            if ctx.mask is not None:
                err = torch.where(ctx.mask, err.reshape(ctx.shapes[1]), 0.0).view(z.shape)
        grad_z = grad_table = None
        if ctx.needs_input_grad[0]:
            if grad_commit is None and grad_loss is not None and grad_q is not None:
                grad_z = torch.addcmul(grad_q, err, grad_loss, value=w_c * scale)  # the usual case: one op
            else:
                w = _weighted(grad_loss, w_c * scale, grad_commit, scale)
                if w is None:
                    grad_z = grad_q
                else:
                    grad_z = err * w if grad_q is None else torch.addcmul(grad_q, err, w)
        if ctx.needs_input_grad[1]:
            if grad_quant is None:  # the usual case: no scalar op
                alpha, w = -w_q * scale, grad_loss
            else:
                alpha, w = -scale, _weighted(grad_loss, w_q, grad_quant, 1.0)
            if w is not None:
                sums = _slot_sums(err.reshape(ctx.shapes[1]), pos, perm, table.shape[1], ctx.offsets, alpha, ctx.clean)
                grad_table = sums * w
        return grad_z, grad_table, None, None


def quantization_grad(z: Tensor, table: Tensor, last: Tensor | None, mask: Tensor | None = None) -> Tensor:
    """The gradient of mean((sg(z) - q)^2) with respect to the table, (d, l):
    -(2 / N) times the per-slot sums of e (zero on padding; over the kept
    positions of ``mask``). Closed form, no autograd graph, for the layer's
    in-place codebook optimizer."""
    q, pos, perm = nearest(z, table, last)
    err, count = _masked_error(z, q, z.shape, mask)
    sums = _slot_sums(err, pos, perm, table.shape[1], None, -2.0)
    return sums / count


def _masked_error(z: Tensor, q: Tensor, layout: tuple, mask: Tensor | None) -> tuple[Tensor, int | Tensor]:
    """e = z - q in z's shape, zero at masked positions (``mask`` (k, 1, n) in
    the layout), and N, the number of elements that count (at least 1: an
    empty or fully masked input has a zero loss, not NaN)."""
    err = z - q
    if mask is None:
        return err, max(z.numel(), 1)
    err = torch.where(mask, err.reshape(layout), 0.0).view(z.shape)
    return err, (mask.sum() * layout[1]).clamp_(min=1).to(err.dtype)  # a float: 1 / N in z's precision


def squared_error(err: Tensor) -> Tensor:
    """sum(err^2) as one dot product."""
    flat = err.reshape(-1)
    return torch.dot(flat, flat)


def quantize(z: Tensor, table: Tensor, layout: tuple[int, int, int], options: Options):
    """(q, indices, loss) or (q, indices, loss, quantization, commitment) for z
    viewed as ``layout`` (k, d, n), q in z's shape: through ``QuantizeFn`` when
    a gradient can flow, else the same forward without a graph."""
    if torch.is_grad_enabled() and (z.requires_grad or table.requires_grad):
        return QuantizeFn.apply(z, table, layout, options)
    w_q, w_c, with_loss, breakdown = options[:4]
    shape, z = z.shape, z.reshape(layout)
    q, idx, _, _ = search(z, table, options)
    if with_loss:
        err, count = _masked_error(z, q, layout, options.mask)
        mse = squared_error(err) / count
        loss = mse * (w_q + w_c)
    else:
        mse = loss = z.new_zeros(())
    q = q.reshape(shape)
    return (q, idx, loss, mse, mse.clone()) if breakdown else (q, idx, loss)
