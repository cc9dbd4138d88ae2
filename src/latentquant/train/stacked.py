"""Many runs as one model: K members of a grid trained together in one process.

A *stack* is K resolved runs (:class:`~latentquant.train.config.Resolved`, one
per member) that share their dataset, model family, backbone, batch size and
parameter shapes. Their weights live in stacked tensors ``(K, ...)``; each
member's own model keeps working on views of them (its parameters are slices
``stacked[k]``), so checkpointing, evaluation and the figures take the member's
model as they take a separate run's. Per member, as in its separate run:

- its seed and data stream: the batch of step t is ``rng(seed_k, t)``
  (``batches.Prefetcher``, one per member), its weights initialised from its seed;
- its random numbers (a VAE's noise): the member's own torch generator state,
  swapped in around its draws, its evaluation and its checkpoint;
- its per-parameter arithmetic: lr, weight decay, gradient clip, and every float
  model option (loss weights, beta) are per-member values;
- its AdamW state: :class:`StackedAdamW` is ``torch.optim.AdamW`` (foreach) and
  the element-wise clipping of ``models.base.clip_gradients`` with ``lr``,
  ``weight_decay`` and ``clip`` as per-member tensors: in float64 it gives each
  member the parameters of its own AdamW (the tests check 50 steps to 1e-9);
- its NaN handling: a member whose loss or weights stop being finite is stopped
  (its run directory records it as a separate run's would) and the rest go on.

What cannot vary inside a stack (one ValueError naming the setting): everything
outside ``VARYING``: dataset and its files, model, arch, batch_size, num_latents,
values_per_latent (they set shapes), integer and boolean options (shapes or
control flow), steps and the log, checkpoint and evaluation cadence (one loop),
device, precision, compile, threads, prefetch. The GAN models (several
optimizers and their own schedule) are refused, as is every model not in
``STACKABLE`` (the models the tests check).

Two ways to run the members' forward passes, the same parameters and optimizer:

``vmap``
    ``torch.func.stack_module_state`` layout + ``functional_call`` + ``vmap`` over
    the member axis, on a meta-device template of member 0 (per-member float
    options set on it as batched scalars). ``vmap`` turns a convolution with
    batched weights into one grouped convolution, so this *is* the grouped-
    convolution design, reached through each model's own ``forward`` instead of
    a second, hand-stacked copy of every backbone. Under ``vmap`` the latent
    quantizer runs ``quantize.reference_forward`` (its fused kernel is an
    autograd.Function without a vmap rule); random draws go through the
    members' own generators (:class:`_MemberRandom`). For accelerators.
``loop``
    the members' own models one after another on their slices of the stacked
    weights (the fused kernel, no vmap), then one stacked optimizer step. For
    CPUs, where grouped convolutions are no faster than separate ones.

``auto`` picks ``vmap`` on CUDA and ``loop`` elsewhere. Measured on the 2-core
CPU of this project (heavily loaded, load average 7-8, torch 2.13, 1 thread,
2026-12-05), forward + backward of one conv layer (batch 64, kernel 4, stride 2)
for 3 members, seconds per call (two repeats): 1 -> 32 channels at 64 px:
separate 0.34 / 0.25, grouped 0.36 / 0.36, vmap 0.34 / 0.41; 32 -> 32 at 32 px:
separate 0.30 / 0.15, grouped 0.31 / 0.21, vmap 0.36 / 0.35; 64 -> 64 at 8 px:
separate 0.041 / 0.044, grouped 0.073 / 0.045, vmap 0.056 / 0.067. Whole QLAE
training steps (``benchmarks/stacked.py``, batch 64, 1 thread, interleaved, load
average 2-3): a ``vmap`` stack reaches 0.53x-0.76x (``small``) and 0.45x-0.96x
(``compact``) of the images/s of K = 1, 3, 8 separate runs, falling as K grows, a
``loop`` stack 0.92x-1.00x (docs/benchmarks.md). On a CPU a
grouped convolution does the same arithmetic as K separate ones, and vmap's
layout changes cost more, so the CPU runs ``loop``; grouped convolutions pay on a
GPU, where one launch replaces K small ones (``benchmarks/stacked.py --device cuda``).
No hand-stacked backbone of grouped layers was written: layer for layer, an explicit
grouped convolution (``F.conv2d(..., groups=K)``) measured as vmap's does, and it
would duplicate every backbone beside the models' own forward.

:func:`train_stack` is ``loop.train`` for a stack: after its own resume checks
it hands a :class:`StackTrainer` to the loop every run goes through
(``loop.run_members``), so each member's run directory is written by the same
code (``RunDir``, ``RunLog``, ``loop.save``, ``evaluate_run``), the members
checkpointed and evaluated one after another.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.optim.optimizer import _get_scalar_dtype
from torch.overrides import TorchFunctionMode

from latentquant.models.base import LatentModel
from latentquant.quantize import LatentQuantize, reference_forward
from latentquant.train.checkpoint import restore
from latentquant.train.config import Resolved, TrainConfig, resolve
from latentquant.train.distributed import setup_distributed
from latentquant.train.loop import (
    check_resumed_identity,
    resume_point,
    run_members,
    save,
)
from latentquant.train.rundir import RunDir
from latentquant.validation import UserError, check_choice

STRATEGIES = ("auto", "vmap", "loop")
#: the models whose stacked training the tests compare with their separate runs
STACKABLE = ("qlae", "ae", "bioae", "vae", "tcvae")
#: the stackable models that draw no random numbers in training (no generator swaps under vmap)
DETERMINISTIC = ("qlae", "ae", "bioae")
#: config fields a member may set for itself; every other field is shared by the stack
VARYING = (
    "seed",
    "lr",
    "weight_decay",
    "weight_decay_timescale",
    "clip",
    "options",  # float options only (loss weights, beta)
    "out",
    "eval_samples",
    "dci_model",
    "keep_checkpoints",
    "logger",
)


def check_stackable(members: Sequence[Resolved]) -> None:
    """ValueError naming the first setting that keeps ``members`` out of one stack."""
    if not members:
        raise ValueError("a stack needs at least one member, got none")
    first = members[0].config
    if first.model not in STACKABLE:
        raise ValueError(
            f"model {first.model!r} cannot be stacked (stackable: {', '.join(STACKABLE)}); train it as separate runs"
        )
    for r in members[1:]:
        c = r.config
        for name in TrainConfig.field_names():
            if name not in VARYING and getattr(c, name) != getattr(first, name):
                raise ValueError(
                    f"{name} cannot vary inside a stack: {getattr(first, name)!r} ({first.out}) and "
                    f"{getattr(c, name)!r} ({c.out}); it may vary in: {', '.join(VARYING)}"
                )
        for key in first.options:
            a, b = first.options[key], c.options.get(key)
            if a != b and not (type(a) is float and type(b) is float):
                raise ValueError(
                    f"option {key} cannot vary inside a stack (only float options can): {a!r} ({first.out}) "
                    f"and {b!r} ({c.out})"
                )
    outs = [str(r.config.out) for r in members]
    if len(set(outs)) != len(outs):
        raise ValueError(f"two members of a stack write to the same run directory: {outs}")


# ---------------------------------------------------------------------------
# the stacked model


class StackedModel:
    """K models of one class and shapes, their weights stacked ``(K, ...)`` and shared.

    ``params`` / ``buffers``: name -> stacked tensor (the stacked parameters are
    leaves that get the gradients). After construction, member k's model
    ``models[k]`` holds views ``params[name][k]``: an update of the stack is an
    update of every member model, and loading a state_dict into a member model
    writes into the stack. ``states``: each member's torch RNG state.
    """

    def __init__(self, models: Sequence[LatentModel], strategy: str = "auto", rng_states: Sequence[Tensor] = ()):
        check_choice("strategy", strategy, STRATEGIES)
        if not models:
            raise ValueError("a stack needs at least one model, got none")
        self.models = list(models)
        self.K = len(self.models)
        first = self.models[0]
        for k, m in enumerate(self.models[1:], 1):
            if type(m) is not type(first):
                raise TypeError(f"stacked models must share a class: {type(first).__name__} and {type(m).__name__}")
            for what, a, b in (
                ("parameter", first.named_parameters(), m.named_parameters()),
                ("buffer", first.named_buffers(), m.named_buffers()),
            ):
                sa = {n: (t.shape, t.dtype, t.device) for n, t in a}
                sb = {n: (t.shape, t.dtype, t.device) for n, t in b}
                if sa != sb:
                    bad = next(n for n in sorted(set(sa) | set(sb)) if sa.get(n) != sb.get(n))
                    raise ValueError(
                        f"stacked models must share {what} shapes: {bad} is {sa.get(bad)} in member 0 "
                        f"and {sb.get(bad)} in member {k}"
                    )
        device = next(first.parameters()).device
        self.device = device
        if strategy == "auto":
            strategy = "vmap" if device.type == "cuda" else "loop"
        self.strategy = strategy
        self.hyper = _float_attributes(self.models)  # (module path, attribute) -> per-member values
        # the template: member 0's structure on the meta device, for functional_call
        self.template = copy.deepcopy(first).to("meta")
        for module in self.template.modules():
            if isinstance(module, LatentQuantize):
                module.forward = types.MethodType(_plain_quantize, module)
        self.params = {
            n: torch.stack([m.get_parameter(n).detach() for m in self.models]) for n, _ in first.named_parameters()
        }
        self.buffers = {n: torch.stack([m.get_buffer(n) for m in self.models]) for n, _ in first.named_buffers()}
        for p in self.params.values():
            p.requires_grad_(True)
        for k, m in enumerate(self.models):  # member k's tensors become views of the stack
            for name, stacked in self.params.items():
                owner, leaf = _split(m, name)
                owner._parameters[leaf] = nn.Parameter(stacked.detach()[k])
            for name, stacked in self.buffers.items():
                owner, leaf = _split(m, name)
                owner._buffers[leaf] = stacked[k]
        self.dtype = dtype = next(iter(self.params.values())).dtype
        self.hyper_tensors = {key: torch.tensor(v, dtype=dtype, device=device) for key, v in self.hyper.items()}
        self.states = [s.clone() for s in rng_states] or [_get_rng(device) for _ in self.models]
        self.active = [True] * self.K
        self._members = torch.arange(self.K, device=device)

    # -- forward: (K, b, ...) -> losses (K,), parts {name: (K,)} ------------------------

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Each member's objective on its own batch ``x[k]``."""
        if x.is_floating_point() and x.dtype != self.dtype and self.dtype == torch.float64:
            x = x.to(self.dtype)  # a float64 stack (the tests) reads float64 images
        if self.strategy == "vmap":
            return self._forward_vmap(x)
        return self._forward_loop(x)

    __call__ = forward

    def _forward_loop(
        self, x: Tensor, autocast: Callable[[], Any] = nullcontext, backward: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The members' own models in turn; with ``backward``, each loss's backward right after
        its forward (one member's graph alive at a time, as in its separate run)."""
        if x.is_floating_point() and x.dtype != self.dtype and self.dtype == torch.float64:
            x = x.to(self.dtype)
        losses, parts = [], []
        for k, m in enumerate(self.models):
            if not self.active[k]:  # a stopped member costs nothing
                losses.append(None)
                parts.append(None)
                continue
            with self.member_rng(k):
                with autocast():
                    out = m(x[k])
                if backward:
                    out.loss.backward()
            losses.append(out.loss.detach() if backward else out.loss)
            parts.append(out.parts)
        done = next(p for p in parts if p is not None)
        nan = {key: torch.full_like(v, math.nan) for key, v in done.items()}
        loss = torch.stack([v if v is not None else torch.zeros_like(done["loss"]) for v in losses])
        stacked = {key: torch.stack([(p or nan)[key] for p in parts]) for key in done}
        return loss, stacked

    def _forward_vmap(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        template, keys = self.template, list(self.hyper_tensors)
        random = _MemberRandom(self) if self.models[0].name not in DETERMINISTIC else nullcontext()

        def one(params, buffers, hyper, member, xk):
            if isinstance(random, _MemberRandom):
                random.member = member
            held = {key: getattr(template.get_submodule(key[0]), key[1]) for key in keys}
            try:
                for key, value in zip(keys, hyper):
                    setattr(template.get_submodule(key[0]), key[1], value)
                out = functional_call(template, (params, buffers), (xk,))
            finally:
                for key, value in held.items():
                    setattr(template.get_submodule(key[0]), key[1], value)
            return out.loss, out.parts

        hyper = [self.hyper_tensors[key] for key in keys]
        with random:
            return vmap(one, randomness="same")(self.params, self.buffers, hyper, self._members, x)

    def train(self, mode: bool = True) -> StackedModel:
        self.template.train(mode)
        for m in self.models:
            m.train(mode)
        return self

    # -- one update ------------------------------------------------------------------------

    def training_step(
        self, x: Tensor, optimizer: StackedAdamW, step: int, autocast: Callable[[], Any] = nullcontext
    ) -> dict[str, Tensor]:
        """One update of every active member (as ``LatentModel.training_step``: forward, backward,
        clip, AdamW); returns the detached loss parts ``{name: (K,)}``."""
        if self.strategy == "loop":  # each member's forward and backward in turn, as its own run's
            _, parts = self._forward_loop(x, autocast, backward=True)
        else:
            with autocast():
                losses, parts = self.forward(x)
            active = [k for k in range(self.K) if self.active[k]]
            (losses if len(active) == self.K else losses[active]).sum().backward()
        if self.strategy == "loop":  # the members' gradients, gathered into the stack's
            for name, p in self.params.items():
                grads = [m.get_parameter(name).grad for m in self.models]
                if all(g is None for g in grads):
                    continue
                p.grad = torch.stack([g if g is not None else torch.zeros_like(p[0]) for g in grads])
                for m in self.models:
                    m.get_parameter(name).grad = None
        optimizer.step(self.active)
        optimizer.zero_grad()
        return {k: v.detach() for k, v in parts.items()}

    # -- member random streams ------------------------------------------------------------

    @contextmanager
    def member_rng(self, k: int) -> Iterator[None]:
        """Member ``k``'s torch generator state in place of the process's, and kept after."""
        held = _get_rng(self.device)
        _set_rng(self.device, self.states[k])
        try:
            yield
        finally:
            self.states[k] = _get_rng(self.device)
            _set_rng(self.device, held)

    def finite(self, k: int) -> bool:
        """Whether member ``k``'s weights and buffers are all finite."""
        tensors = [t[k] for t in (*self.params.values(), *self.buffers.values()) if t.is_floating_point()]
        return bool(torch.stack([t.isfinite().all() for t in tensors]).all())


def _split(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def _float_attributes(models: Sequence[nn.Module]) -> dict[tuple[str, str], list[float]]:
    """The plain attributes that differ between the models: floats (returned, per member);
    anything else differing is a ValueError (it sets shapes or control flow)."""
    out = {}
    plain = (int, float, bool, str, tuple, type(None))
    for path, module in models[0].named_modules():
        others = [m.get_submodule(path) for m in models[1:]]
        for attr, value in vars(module).items():
            if attr.startswith("_") or not isinstance(value, plain):
                continue
            values = [value, *(vars(o).get(attr) for o in others)]
            if all(v == value for v in values):
                continue
            if all(type(v) is float for v in values):
                out[(path, attr)] = [float(v) for v in values]
            else:
                raise ValueError(
                    f"{(path + '.' if path else '') + attr} cannot vary inside a stack (only float settings can), "
                    f"got {values}"
                )
    return out


def _plain_quantize(self: LatentQuantize, x: Tensor, return_loss_breakdown: bool = False):
    """``LatentQuantize.forward`` under vmap: ``reference_forward``, the layer's definition in plain ops."""
    out, parts = reference_forward(self, x)
    return (out, parts) if return_loss_breakdown else out


def _get_rng(device: torch.device) -> Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class _MemberRandom(TorchFunctionMode):
    """Under ``vmap(..., randomness="same")``: each random draw of the template's forward is
    drawn K times, member k's from member k's generator, and member ``member`` (a batched
    index) takes its own. Random functions it does not know are refused, never shared."""

    LIKE = {torch.randn_like: torch.randn, torch.rand_like: torch.rand}
    SIZED = (torch.randn, torch.rand)
    REFUSED = (
        torch.randint,
        torch.randint_like,
        torch.randperm,
        torch.bernoulli,
        torch.multinomial,
        torch.normal,
        torch.poisson,
        torch.nn.functional.dropout,
        Tensor.normal_,
        Tensor.uniform_,
        Tensor.bernoulli_,
        Tensor.exponential_,
        Tensor.random_,
    )

    def __init__(self, stack: StackedModel):
        super().__init__()
        self.stack, self.member = stack, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.LIKE:
            like = args[0]
            draw = self.LIKE[func]
            shape = tuple(like.shape)
            opts = {"dtype": kwargs.get("dtype") or like.dtype, "device": kwargs.get("device") or like.device}
            return self._bank(lambda: draw(shape, **opts))
        if func in self.SIZED:
            return self._bank(lambda: func(*args, **kwargs))
        if func in self.REFUSED:
            raise ValueError(f"{func.__name__}: a stacked (vmap) forward draws only randn/rand; use strategy='loop'")
        return func(*args, **kwargs)

    def _bank(self, draw: Callable[[], Tensor]) -> Tensor:
        bank = []
        for k in range(self.stack.K):
            with self.stack.member_rng(k):
                bank.append(draw())
        return torch.stack(bank)[self.member]


# ---------------------------------------------------------------------------
# the optimizer


class StackedAdamW:
    """``torch.optim.AdamW`` (foreach) over stacked parameters, per-member ``lr``, ``weight_decay``
    and ``clip`` (the decay group's element-wise clip of ``models.base.clip_gradients``).

    The groups are member 0's ``split_parameters``: ``decay`` (decayed, clipped) and
    ``no_decay`` (neither). The arithmetic is AdamW's, op for op, with a member's
    values broadcast along its axis, so in float64 each member gets what its own
    AdamW gives. ``step(active)`` leaves stopped members untouched.
    """

    def __init__(
        self,
        stack: StackedModel,
        lr: Sequence[float],
        weight_decay: Sequence[float],
        clip: Sequence[float | None],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        K = stack.K
        for name, values in (("lr", lr), ("weight_decay", weight_decay), ("clip", clip)):
            if len(values) != K:
                raise ValueError(f"{name} must give one value per member ({K}), got {len(values)}")
        self.stack, self.betas, self.eps = stack, betas, eps
        decay, no_decay = stack.models[0].split_parameters()
        self.groups = {"decay": list(decay), "no_decay": list(no_decay)}
        f64 = dict(dtype=torch.float64, device=stack.device)
        self.lr = torch.tensor([float(v) for v in lr], **f64)
        self.weight_decay = torch.tensor([float(v) for v in weight_decay], **f64)
        self.clip = torch.tensor([float(c) if c else math.inf for c in clip], **f64)
        self.step_count = 0
        self.state = {
            n: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)} for n, p in stack.params.items()
        }

    def zero_grad(self) -> None:
        for p in self.stack.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, active: Sequence[bool] | None = None) -> None:
        params = self.stack.params
        beta1, beta2 = self.betas
        self.step_count += 1
        bias1 = 1 - beta1**self.step_count
        bias2_sqrt = (1 - beta2**self.step_count) ** 0.5
        keep = None
        if active is not None and not all(active):
            keep = torch.tensor([not a for a in active], device=self.stack.device)
        for group, names in self.groups.items():
            for name in names:
                p, g = params[name], params[name].grad
                if g is None:
                    continue
                shape = (-1,) + (1,) * (p.ndim - 1)
                st = self.state[name]
                if keep is not None:
                    held = (p.clone(), st["exp_avg"].clone(), st["exp_avg_sq"].clone())
                if group == "decay":
                    c = self.clip.to(g.dtype).view(shape)
                    g = torch.minimum(torch.maximum(g, -c), c)  # clamp_min(-c), clamp_max(c)
                    p.mul_((1 - self.lr * self.weight_decay).to(p.dtype).view(shape))
                st["exp_avg"].lerp_(g, 1 - beta1)
                st["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                step_size = ((self.lr / bias1) * -1).to(p.dtype).view(shape)
                denom = st["exp_avg_sq"].sqrt().div_(bias2_sqrt).add_(self.eps)
                p.add_(st["exp_avg"].mul(step_size).div_(denom))  # addcdiv: p + (value * a) / b
                if keep is not None:
                    k = keep.view(shape)
                    for t, old in zip((p, st["exp_avg"], st["exp_avg_sq"]), held):
                        t.copy_(torch.where(k, old, t))

    # -- a member's optimizer, as its separate run holds it (checkpoints) -----------------

    def export(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        """Write member ``k``'s moments and step into ``optimizer`` (its model's own AdamW,
        from ``configure_optimizers``), in AdamW's state layout, as views of the stack."""
        names = {id(p): n for n, p in self.stack.models[k].named_parameters()}
        optimizer.state.clear()
        if self.step_count == 0:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = self.state[names[id(p)]]
                optimizer.state[p] = {
                    "step": torch.tensor(float(self.step_count), dtype=_get_scalar_dtype()),
                    "exp_avg": st["exp_avg"][k],
                    "exp_avg_sq": st["exp_avg_sq"][k],
                }

    def load(self, k: int, optimizer: torch.optim.Optimizer) -> int:
        """Copy member ``k``'s state from ``optimizer`` (restored from its checkpoint) into the
        stack; returns its step count."""
        names = {id(p): n for n, p in self.stack.models[k].named_parameters()}
        steps = set()
        for p, st in optimizer.state.items():
            mine = self.state[names[id(p)]]
            mine["exp_avg"][k].copy_(st["exp_avg"])
            mine["exp_avg_sq"][k].copy_(st["exp_avg_sq"])
            steps.add(int(st["step"]))
        if len(steps) > 1:
            raise ValueError(f"member {k}'s optimizer holds several step counts: {sorted(steps)}")
        return steps.pop() if steps else 0


def stack_members(members: Sequence[Resolved], strategy: str = "auto", rng_states: Sequence[Tensor] = ()):
    """``(StackedModel, StackedAdamW)`` of resolved members (checked by :func:`check_stackable`),
    each model moved to its device first."""
    check_stackable(members)
    stack = StackedModel([r.model for r in members], strategy, rng_states)
    cfgs = [r.config for r in members]
    opt = StackedAdamW(stack, [c.lr for c in cfgs], [c.weight_decay for c in cfgs], [c.clip for c in cfgs])
    return stack, opt


# ---------------------------------------------------------------------------
# the loop


def train_stack(
    configs: Sequence[TrainConfig],
    resume: bool | Sequence[bool] = False,
    overwrite: bool = False,
    *,
    strategy: str = "auto",
    kind: str = "train",
    checkpoint_seconds: float | None = None,
) -> list[dict[str, Any] | Exception]:
    """Train the runs of ``configs`` as one stack (``loop.train`` for K members).

    ``resume`` (one flag, or one per member) continues members from their last
    checkpoint; the stack starts from one step, so resumed members must have
    checkpoints of one step and new members are allowed only when that step is 0.
    Returns per member its final scores, or the :class:`TrainingDiverged` that
    stopped it. Raises :class:`TrainingInterrupted` after checkpointing every
    member on SIGINT/SIGTERM, UserError for bad input. ``checkpoint_seconds``: also
    checkpoint every member once that many seconds have passed since the last
    checkpoint (a GPU lease that may end at any moment loses at most that much work);
    it sets the members' ``checkpoint_seconds``, which their configs may give instead.
    """
    configs = list(configs)
    if checkpoint_seconds is not None:
        configs = [dataclasses.replace(c, checkpoint_seconds=checkpoint_seconds) for c in configs]
    flags = [bool(resume)] * len(configs) if isinstance(resume, bool) else [bool(r) for r in resume]
    if len(flags) != len(configs):
        raise ValueError(f"resume must give one flag per member ({len(configs)}), got {len(flags)}")
    for config, again in zip(configs, flags):
        if again and config.out is not None:
            check_resumed_identity(RunDir(config.out), config)
    members, states = [], []
    for config in configs:  # one dataset for all; each model built from its seed
        members.append(resolve(config, members[0].dataset if members else None))
        states.append(torch.get_rng_state())  # the stream its separate run starts from
    try:
        check_stackable(members)
    except ValueError as err:
        raise UserError(str(err)) from None
    cfg0 = members[0].config
    dist = setup_distributed(cfg0.device)
    if dist.enabled:
        raise UserError("a stack runs in one process; run torchrun with separate runs instead")
    runs = [RunDir(r.config.out) for r in members]
    with ExitStack() as held:
        for run, again in zip(runs, flags):  # every member's lock, for the stack's lifetime
            held.enter_context(run.acquire(new=not again, overwrite=overwrite, kind=kind))
        return _train_stack(members, runs, flags, states, dist, strategy)


def _train_stack(members, runs, flags, states, dist, strategy) -> list[dict[str, Any] | Exception]:
    cfgs = [r.config for r in members]
    if cfgs[0].threads:
        torch.set_num_threads(cfgs[0].threads)

    # -- resume: each member's checkpoint, written under its config.yaml, at one step ---
    found = [resume_point(run, c) if again else None for run, c, again in zip(runs, cfgs, flags)]
    starts = {int(f[2]["step"]) if f else 0 for f in found}
    if len(starts) > 1:
        raise UserError(f"the members of a stack must start from one step, got steps {sorted(starts)}")
    start = starts.pop()
    for run, again in zip(runs, flags):
        if again:
            run.truncate_logs(start)

    # -- the stacked model and its optimizer; the members' own optimizers for their checkpoints --
    for r in members:
        r.model.to(dist.device)
    trainer = StackTrainer(members, strategy, states)
    for k, f in enumerate(found):
        if f is not None:
            trainer.restore(k, f)
            print(f"resuming {runs[k].path} from {f[0].name} (step {start:,} of {cfgs[k].steps:,})", file=sys.stderr)
    del found
    for run, c in zip(runs, cfgs):
        run.write_config(c)
    return run_members(trainer, members, runs, dist, start)


class StackTrainer:
    """What ``loop.run_members`` trains for a stack: the stacked model and its optimizer, and each
    member's own optimizers, which its checkpoints hold (``loop.OneRun`` answers the same calls
    for one run). A member runs under its own random stream (``member_rng``)."""

    def __init__(self, members: Sequence[Resolved], strategy: str, states: Sequence[Tensor]):
        self.stack, self.opt = stack_members(members, strategy, states)
        self.models = [r.model for r in members]
        self.active = self.stack.active
        self.lrs = [r.config.lr for r in members]
        self.own = [
            r.model.configure_optimizers(lr=r.config.lr, weight_decay=r.config.weight_decay, clip=r.config.clip)
            for r in members
        ]
        self.meter = StackMeter()
        # under vmap the layer runs as its plain reference, which counts no usage: none is logged
        self.counts_usage = self.stack.strategy == "loop"

    def restore(self, k: int, found) -> None:
        _, tensors, doc = found
        with self.stack.member_rng(k):  # restore sets the RNG: the member's stream
            restore(tensors, doc, self.models[k], self.own[k])
        self.opt.step_count = self.opt.load(k, self.own[k]["model"])

    def member_rng(self, k: int):
        return self.stack.member_rng(k)

    def step(self, batches: list[Tensor], step: int, autocast) -> None:
        self.stack.train()
        self.meter.add(self.stack.training_step(torch.stack(batches), self.opt, step, autocast))

    def read(self, dist, stop: bool, due: bool = False) -> tuple[list[dict[str, float]], bool, bool]:
        return self.meter.read(), stop, due

    def lr(self, k: int) -> float:
        return self.lrs[k]

    def checkpoint(self, k: int, cfg, step: int, run: RunDir, dist, log) -> Path | None:
        self.opt.export(k, self.own[k]["model"])
        return save(self.models[k], self.own[k], cfg, step, run, dist, log)


class StackMeter:
    """``loop.LossMeter`` for stacked parts: per-member sums ``(K,)`` on the device, read back
    (one sync) at the logging cadence, each part averaged over the steps that reported it."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, parts: dict[str, Tensor]) -> None:
        for key, v in parts.items():
            v = v.detach().float()
            self.sums[key] = self.sums[key] + v if key in self.sums else v.clone()
            self.counts[key] = self.counts.get(key, 0) + 1

    def read(self) -> list[dict[str, float]]:
        keys = sorted(self.sums)
        if not keys:
            return []
        values = torch.stack([self.sums[key] for key in keys]).tolist()  # (parts, K)
        out = [
            {key: values[i][k] / max(self.counts[key], 1) for i, key in enumerate(keys)} for k in range(len(values[0]))
        ]
        self.sums, self.counts = {}, {}
        return out
