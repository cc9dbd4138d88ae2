"""LatentQuantize(track_usage=True) and usage() (issue 25 section 1).

Counts are checked against torch.bincount of the indices forward returns,
perplexity against its formula, with several codebooks, masks, NaN, batch 0,
the running total and its reset, and the sum over two processes (gloo).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from latentquant import LatentQuantize
from latentquant._quantize_usage import summarize
from latentquant.train.distributed import Dist, wrap_ddp
from latentquant.train.loop import read_usage


def per_latent(lq: LatentQuantize, indices: torch.Tensor) -> torch.Tensor:
    """Indices as forward returns them -> slots (..., c, d)."""
    if lq.flat_indices:
        return lq.indices_to_level_indices(indices if lq.keep_num_codebooks_dim else indices.unsqueeze(-1))
    return indices if lq.keep_num_codebooks_dim else indices.unsqueeze(-2)


def expected_counts(lq: LatentQuantize, slots: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(c, d, max L) by bincount, per codebook and latent, over the kept positions."""
    c, d, width = lq.num_codebooks, lq.codebook_dim, max(lq.levels)
    flat = slots.reshape(-1, c, d)
    if keep is not None:
        flat = flat[keep.reshape(-1)]
    out = torch.zeros(c, d, width, dtype=torch.int64)
    for j in range(c):
        for i in range(d):
            col = flat[:, j, i]
            out[j, i] = torch.bincount(col[col >= 0], minlength=width)
    return out


@pytest.mark.parametrize(
    "levels, num_codebooks, flat, shape",
    [
        ([4, 6, 3], 1, True, (50, 3)),
        ([4, 6, 3], 2, False, (7, 5, 6)),
        ([5, 5], 3, True, (2, 6, 4, 4)),  # channel-first
        ([8] * 4, 1, False, (2, 4, 40, 40)),  # the counting search
    ],
)
def test_counts_are_the_bincount_of_the_indices(levels, num_codebooks, flat, shape):
    torch.manual_seed(0)
    lq = LatentQuantize(levels, num_codebooks=num_codebooks, flat_indices=flat, track_usage=True)
    x = torch.randn(shape) * 0.4
    out = lq(x)
    slots = per_latent(lq, out.indices)
    u = lq.usage(running=False)
    assert torch.equal(u.counts, expected_counts(lq, slots))
    assert int(u.counts.sum()) == slots.numel()
    # perplexity: exp of the entropy of each latent's frequencies, per codebook and over all
    p = u.counts.double() / u.counts.sum(-1, keepdim=True)
    entropy = -(p * p.clamp(min=1e-300).log()).sum(-1)
    torch.testing.assert_close(u.perplexity, entropy.exp().float())
    q = u.counts.sum(0).double() / u.counts.sum((0, -1)).unsqueeze(-1)
    torch.testing.assert_close(u.perplexity_all, (-(q * q.clamp(min=1e-300).log()).sum(-1)).exp().float())
    real = torch.arange(max(levels)) < torch.tensor(levels).unsqueeze(-1)
    assert torch.equal(u.dead, ((u.counts == 0) & real).sum(-1))
    assert torch.equal(u.dead_all, ((u.counts.sum(0) == 0) & real).sum(-1))


def test_perplexity_extremes_and_padding_is_never_dead():
    lq = LatentQuantize([4, 2], track_usage=True)
    values = lq.values.detach()
    x = torch.stack([values[0, torch.arange(8) % 4], values[1, torch.zeros(8, dtype=torch.long)]], -1)
    u = lq(x) and lq.usage()
    torch.testing.assert_close(u.perplexity, torch.tensor([[4.0, 1.0]]))  # uniform over 4; one value only
    assert u.dead.tolist() == [[0, 1]]  # latent 1's slots 2 and 3 are padding, not dead values


def test_running_total_accumulates_and_resets_and_masks_nan_and_empty_count_nowhere():
    torch.manual_seed(0)
    lq = LatentQuantize([5, 5, 5], track_usage=True)
    a, b = torch.randn(10, 3), torch.randn(6, 3)
    ca = lq(a) and lq.usage(running=False).counts
    cb = lq(b) and lq.usage(running=False).counts
    assert torch.equal(lq.usage().counts, ca + cb) and int(lq.usage().counts.sum()) == 16 * 3
    lq.reset_usage()
    assert int(lq.usage().counts.sum()) == 0 and torch.equal(lq.usage(running=False).counts, cb)
    # a mask and a NaN latent: 4 kept rows, the first with a NaN second latent
    x = torch.randn(8, 3)
    x[0, 1] = float("nan")
    mask = torch.arange(8) % 2 == 0
    lq(x, mask=mask)
    assert lq.usage(running=False).counts.sum(-1).tolist() == [[3, 3, 3]]  # flat: the row's index is -1
    per = LatentQuantize([5, 5, 5], flat_indices=False, track_usage=True)
    per(x, mask=mask)
    assert per.usage(running=False).counts.sum(-1).tolist() == [[4, 3, 4]]  # per latent: only the NaN one
    # batch 0: nothing counted, perplexity 0
    lq.reset_usage()
    lq(torch.randn(0, 3))
    u = lq.usage()
    assert int(u.counts.sum()) == 0 and float(u.perplexity.abs().sum()) == 0.0
    assert u.dead.tolist() == [[5, 5, 5]]


def test_usage_needs_track_usage():
    lq = LatentQuantize([3, 3])
    assert lq.last_usage_counts is None and "track_usage" not in repr(lq)
    with pytest.raises(ValueError, match="track_usage=True"):
        lq.usage()
    with pytest.raises(TypeError, match="track_usage must be True or False"):
        LatentQuantize([3, 3], track_usage=1)


def _rank(rank: int, path: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)
        lq = LatentQuantize([4, 4], track_usage=True)
        lq(torch.randn(5 + rank, 2))
        local = lq.usage().counts
        total = lq.usage(all_ranks=True)
        # plain lists: a tensor in a queue is shared through the sending process, which exits first
        queue.put((rank, local.tolist(), total.counts.tolist(), total.perplexity.tolist()))
        assert torch.equal(lq.usage().counts, local)  # the module's own counts are left alone
        # wrapped by the training loop's DDP, whose forward copies rank 0's buffers to every rank:
        # the counts stay each rank's own, over two forwards
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), LatentQuantize([4, 4], track_usage=True))
        net = wrap_ddp(model, model, Dist(rank=rank, world=2))
        seen = []
        for _ in range(2):
            x = torch.randn(7, 2) * (1 + 3 * rank)  # the ranks use their values differently
            seen.append(net(x).indices)
        expected = expected_counts(model[1], per_latent(model[1], torch.cat(seen)))
        assert torch.equal(model[1].usage().counts, expected), f"rank {rank}"
        # and the loop's read: the figures of both ranks' counts together, then a reset
        both = expected.clone()
        dist.all_reduce(both)
        want = summarize(both, model[1].num_values)
        record = read_usage([model[1]], Dist(rank=rank, world=2))
        assert record["dead"] == want.dead_all.tolist()
        assert record["perplexity"] == pytest.approx(want.perplexity_all.tolist(), abs=1e-4)
        assert int(model[1].usage().counts.sum()) == 0
    finally:
        dist.destroy_process_group()


def test_all_ranks_sums_the_counts_of_two_processes(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, str(tmp_path / "rendezvous"), queue)) for r in range(2)]
    env = dict(os.environ)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        for p in procs:
            p.start()
        results = sorted(queue.get(timeout=120) for _ in range(2))
        for p in procs:
            p.join(timeout=60)
    finally:
        os.environ.clear()
        os.environ.update(env)
        for p in procs:
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    (_, a, total_a, perp_a), (_, b, total_b, perp_b) = [[torch.tensor(v) for v in r] for r in results]
    assert torch.equal(total_a, a + b) and torch.equal(total_b, a + b)
    assert int((a + b).sum()) == (5 + 6) * 2 and math.isclose(float(perp_a[0, 0]), float(perp_b[0, 0]))


def test_report_figure_counts_as_the_layer_does(tmp_path):
    """The report's usage.png: the evaluation codes counted by the layer's rule (a NaN latent's -1
    nowhere), against bincount of the valid slots."""
    from latentquant.train.figures import value_usage

    codes = torch.tensor([[0, 1], [2, -1], [2, 3], [1, 3]])
    usage = value_usage(codes, [3, 4], tmp_path / "usage.png")
    assert usage.counts[0].tolist() == [[1, 1, 2, 0], [0, 1, 0, 2]]
    assert usage.dead_all.tolist() == [0, 2]  # latent 1: values 0 and 2 unused (slot 3 of latent 0 is padding)
    assert (tmp_path / "usage.png").stat().st_size > 1000
