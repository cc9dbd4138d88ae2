"""Speed and memory of latentquant.LatentQuantize against vector-quantize-pytorch.

Peers (the ``bench`` extra; never imported by the package itself):
vector-quantize-pytorch's ``LatentQuantize`` and ``FSQ`` (which only rounds,
so it is the floor a scalar quantizer can hope for), on identical inputs, in
one process. Runs are interleaved (one of each per round, the order rotating)
and each figure is the median over the rounds, so load from other processes
on a shared machine hits every implementation alike.

Regimes
    feature  (256, 6, 32, 32) channel-first feature map, levels [8] * 6
    vectors  (128, 12) QLAE-sized latents, levels [4] * 12 (theirs cannot
             build the paper's 10 values x 12 latents: it materializes all
             10**12 codes); ours is also timed alone at [10] * 12.
    maps     (64, 8, 32, 32) a tokenizer's channel-first feature maps, levels [5] * 8
    tokens   (16, 1024, 8) a tokenizer's sequences (channel-last), levels [5] * 8
``all`` runs feature and vectors; name maps or tokens to run them.

Options: ``--dtype bf16`` feeds bfloat16 inputs (each layer keeps float32
parameters and answers in its own way: ours searches in float32 and returns
bfloat16); ``--compile`` times ``torch.compile`` of each module (inductor;
the first calls, which compile, are warm-up). An implementation that fails
under an option is reported as failed, with the error, not left out.

Bandwidth: a quantizer is memory-bound, so each time is also given as the
rate at which it moves the bytes it cannot avoid: the input read and the
output and indices written (eval), plus the upstream gradient read and the
input's gradient written (train), the same bytes for every implementation
(ours' outputs). On CUDA the rate is also given as a fraction of the GPU's
published memory bandwidth (``PEAK_BANDWIDTH``, by device name; ``--peak-gbs``
for another GPU or a CPU's measured figure).

Modes
    train  forward + backward, gradients flowing into the quantized output
           (a fixed random upstream gradient) and into the loss (1.0)
    eval   forward in eval mode under torch.no_grad()

Memory (CPU): "peak" is the largest total size of tensor storages created
during one training step and alive at the same time, sampled after every aten
op (a TorchDispatchMode tracks each fresh output until its tensor dies;
temporaries internal to a single op are not seen, for any implementation);
"saved" is what autograd keeps between forward and backward
(saved_tensors_hooks, distinct storages). On CUDA, peak is
torch.cuda.max_memory_allocated above the starting level.

Usage:  python benchmarks/quantizer.py [--regime feature vectors maps tokens | all]
        [--rounds N] [--device cpu|cuda] [--threads N] [--dtype fp32|bf16]
        [--compile] [--peak-gbs GBS] [--baseline SRC]

``--baseline SRC`` adds another version of our layer to the same rounds: the
``latentquant`` package under the folder SRC (e.g. ``git archive <commit> src
| tar -x -C /tmp/base``, then ``--baseline /tmp/base/src``), loaded in this
process under its own module names. Interleaved with ours in one process, a
before/after comparison sees the same load. Without vector-quantize-pytorch
installed, the peers are left out (a note says so).

``--threads 1`` is a diagnostic for a loaded machine: with other processes
on the cores, every 2-thread OpenMP region waits for a descheduled thread,
which hides the work each implementation does.
"""

from __future__ import annotations

import argparse
import os
import warnings
import weakref

import torch
from _common import import_beside, interleaved_medians
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from latentquant import LatentQuantize

try:
    from vector_quantize_pytorch import FSQ
    from vector_quantize_pytorch import LatentQuantize as TheirLatentQuantize
except ImportError:  # pragma: no cover
    FSQ = TheirLatentQuantize = None  # the peers are left out; pip install -e '.[bench]'

warnings.filterwarnings("ignore", module="vector_quantize_pytorch")

REGIMES = {
    "feature": dict(shape=(256, 6, 32, 32), levels=[8] * 6, rounds=30),
    "vectors": dict(shape=(128, 12), levels=[4] * 12, rounds=400),
    "maps": dict(shape=(64, 8, 32, 32), levels=[5] * 8, rounds=30),
    "tokens": dict(shape=(16, 1024, 8), levels=[5] * 8, rounds=30),
}
DEFAULT_REGIMES = ("feature", "vectors")
# published memory bandwidth, GB/s (vendors' data sheets), matched against torch.cuda.get_device_name()
PEAK_BANDWIDTH = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100": 3350.0, "A100-SXM4-80GB": 2039.0, "A100": 1555.0}


# ----------------------------------------------------------------------------
# memory


class _LiveStorage(TorchDispatchMode):
    """Peak bytes of storages created inside the region and alive together."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t._is_view():
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in inputs or key in self.live:
                continue  # in-place / out= results, or already counted
            self.live[key] = size
            self.current += size
            weakref.finalize(t, self._release, key)
        self.peak = max(self.peak, self.current)
        return out


def saved_bytes(step) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(backward=False)
    return sum(seen.values())


def peak_bytes(step, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    with _LiveStorage() as mode:
        step()
    return mode.peak


class _ChannelFirst(torch.nn.Module):
    """vector-quantize-pytorch's LatentQuantize reads a 3-D input as (b, d, n): hand it
    (b, n, d) sequences as the view x.transpose(1, 2), and its output back the same way."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x.transpose(1, 2))
        return (out[0].transpose(1, 2),) + tuple(out[1:])


class _AsSequence(torch.nn.Module):
    """FSQ takes (b, n, d), not (b, d): hand it the view x[:, None]."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x.unsqueeze(1))
        return (out[0].squeeze(1),) + tuple(out[1:])


# ----------------------------------------------------------------------------
# timing


def make_steps(module, x, grad, train: bool):
    """Closures running one training step (forward + backward) or one eval forward."""
    one = torch.ones((), device=x.device)

    def train_step(backward: bool = True):
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)
        if not backward:
            return out
        quantized = out[0]
        loss = out[2] if len(out) > 2 and torch.is_tensor(out[2]) and out[2].requires_grad else None
        if loss is None:
            quantized.backward(grad)
        else:
            torch.autograd.backward([quantized, loss], [grad, one])

    def eval_step(backward: bool = False):
        with torch.no_grad():
            return module(x)

    return train_step if train else eval_step


def essential_bytes(module, x: torch.Tensor, train: bool) -> int:
    """The bytes a quantizer cannot avoid moving (see the module docstring), from ``module``'s outputs."""
    with torch.no_grad():
        out = module(x.detach())
    moved = x.nbytes + out[0].nbytes + out[1].nbytes
    return moved + 2 * x.nbytes if train else moved  # + upstream gradient read, input gradient written


def peak_bandwidth(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in PEAK_BANDWIDTH.items() if key in name), None)


def run_regime(
    name: str,
    rounds: int,
    device: torch.device,
    baseline: type | None = None,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    peak_gbs: float | None = None,
) -> list[str]:
    spec = REGIMES[name]
    shape, levels = spec["shape"], spec["levels"]
    d = shape[1] if len(shape) == 4 else shape[-1]
    torch.manual_seed(0)
    x = (torch.randn(shape, device=device) * 0.5).to(dtype).requires_grad_()
    grad = torch.randn(shape, device=device, dtype=dtype)
    modules = {"ours": LatentQuantize(levels=levels)}
    if baseline is not None:
        modules["baseline"] = baseline(levels=levels)
    if FSQ is not None:
        modules["vqp LatentQuantize"] = TheirLatentQuantize(levels=levels, dim=d)
        modules["vqp FSQ"] = FSQ(levels=levels, dim=d) if len(shape) > 2 else _AsSequence(FSQ(levels=levels, dim=d))
        if name == "tokens":
            modules["vqp LatentQuantize"] = _ChannelFirst(modules["vqp LatentQuantize"])
    if name == "vectors":
        modules["ours [10]*12"] = LatentQuantize(levels=[10] * 12)
        if baseline is not None:
            modules["baseline [10]*12"] = baseline(levels=[10] * 12)
    modules = {k: m.to(device) for k, m in modules.items()}
    peak_gbs = peak_bandwidth(device, peak_gbs)

    lines = []
    for mode in ("train", "eval"):
        train = mode == "train"
        for m in modules.values():
            m.train(train)
        moved = essential_bytes(modules["ours"], x, train)
        steps, failed = {}, {}
        for k, m in modules.items():
            step = make_steps(torch.compile(m) if compile else m, x, grad, train)
            try:
                for _ in range(2):  # compiles, and shows what fails under the options
                    step()
                steps[k] = step
            except Exception as err:  # a peer that does not take bf16, or does not compile
                failed[k] = " ".join(f"{type(err).__name__}: {err}".split())[:100]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        med = interleaved_medians(steps, rounds, sync=sync, warmup=3) if steps else {}
        ours = med.get("ours", float("nan"))
        for k in modules:
            if k in failed:
                lines.append(f"{name:8s} {mode:5s} {k:20s}    failed: {failed[k]}")
                continue
            rate = moved / med[k] / 1e9
            of_peak = f" {rate / peak_gbs:6.1%} of peak" if peak_gbs else ""
            mem = ""
            if train and not compile:
                peak, saved = peak_bytes(steps[k], device) / 2**20, saved_bytes(steps[k]) / 2**20
                mem = f"  peak {peak:8.2f} MiB  saved {saved:8.2f} MiB"
            lines.append(
                f"{name:8s} {mode:5s} {k:20s} {med[k] * 1e3:9.3f} ms   {med[k] / ours:6.2f}x ours"
                f"  {rate:7.1f} GB/s{of_peak}{mem}"
            )
    return lines


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=[*REGIMES, "all"], nargs="+", default=["all"])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the inputs' dtype")
    parser.add_argument("--compile", action="store_true", help="time torch.compile of each module")
    parser.add_argument("--peak-gbs", type=float, default=None, help="memory bandwidth, GB/s, for the fraction")
    parser.add_argument(
        "--rounds", type=_positive_int, default=None, help="interleaved rounds (default: 30 feature, 400 vectors)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--baseline", metavar="SRC", default=None, help="a folder holding another latentquant package")
    args = parser.parse_args(argv)
    baseline = import_beside(args.baseline, "latentquant.quantize").LatentQuantize if args.baseline else None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    regimes = [r for r in REGIMES if r in args.regime or ("all" in args.regime and r in DEFAULT_REGIMES)]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}, load average at start {load:.2f}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    print(f"inputs {args.dtype}, {'compiled (torch.compile)' if args.compile else 'eager'}")
    print("time: median over interleaved rounds; 'Nx ours' = that time / ours (above 1: ours is faster)")
    if FSQ is None:
        print("vector-quantize-pytorch is not installed: its LatentQuantize and FSQ are left out")
    if baseline is not None:
        print(f"baseline: {baseline.forward.__code__.co_filename}")
    for name in regimes:
        rounds = args.rounds or REGIMES[name]["rounds"]
        print(f"-- {name}: shape {REGIMES[name]['shape']}, levels {REGIMES[name]['levels']}, {rounds} rounds")
        for line in run_regime(name, rounds, device, baseline, dtype, args.compile, args.peak_gbs):
            print(line, flush=True)
    if hasattr(os, "getloadavg"):
        print(f"load average at end {os.getloadavg()[0]:.2f} (other processes share the machine: compare ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
