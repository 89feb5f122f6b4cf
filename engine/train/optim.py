"""Optimizers: AdamW, or Muon for hidden matrices with AdamW for the rest.

Muon (momentum orthogonalised by a Newton-Schulz iteration) follows the public
reference implementation by Keller Jordan et al. used in modded-nanogpt.
"""

from __future__ import annotations

import torch

from engine.config.loading import Profile


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonal matrices with g's singular vectors (quintic iteration, bf16).

    g is one matrix (m, n) or a stack of them (k, m, n): stacking same-shaped matrices
    turns dozens of small launches into a few batched ones.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        m = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(m, m, m, beta=b, alpha=c), x, beta=a)
    if squeeze:
        x = x.squeeze(0)
    if transposed:
        x = x.mT
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (Nesterov momentum, quintic Newton-Schulz in bf16, lr scaled by
    sqrt(max(1, rows/cols))), with each group's same-shaped matrices orthogonalised as one stack and the
    elementwise work in multi-tensor kernels: one step over modern-70m's matrices takes about a seventh
    of torch.optim.Muon's time (docs/lab/performance.md)."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0,
                 nesterov: bool = True, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                                      ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
            torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
            moments = torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            # a matrix and its transpose orthogonalise in one stack: the Newton-Schulz iteration works on the
            # wide orientation of each anyway
            by_shape: dict[tuple, list[int]] = {}
            for i, p in enumerate(params):
                by_shape.setdefault(tuple(sorted(p.shape)), []).append(i)
            for (short, long), idx in by_shape.items():
                tall = [params[i].size(0) > params[i].size(1) for i in idx]
                stack = torch.stack([moments[i].mT if t else moments[i] for i, t in zip(idx, tall)])
                updates = newton_schulz(stack, group["ns_steps"]).unbind(0)
                for orientation in (False, True):
                    chosen = [j for j, t in enumerate(tall) if t == orientation]
                    if not chosen:
                        continue
                    # scale so the update's RMS does not depend on the matrix's aspect ratio
                    scale = (long / short) ** 0.5 if orientation else 1.0
                    torch._foreach_add_([params[idx[j]] for j in chosen],
                                        [updates[j].mT if orientation else updates[j] for j in chosen],
                                        alpha=-group["lr"] * scale)


class CombinedOptimizer:
    """Several optimizers stepped together, with one learning-rate factor applied to each one's base rates.

    `held` optimizers keep their base rate whatever the factor: the LR range test of one group holds the other."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], held: tuple[type, ...] = ()):
        self.optimizers = optimizers
        for opt in optimizers:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
                group["scheduled"] = not isinstance(opt, held)

    @property
    def param_groups(self):
        return [g for opt in self.optimizers for g in opt.param_groups]

    def set_lr_factor(self, factor: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["base_lr"] * (factor if group["scheduled"] else 1.0)

    def step(self, mark=None) -> None:
        """Each optimizer's step; `mark(name)`, when given, after each (Trainer.train_step's phase timings)."""
        for opt in self.optimizers:
            opt.step()
            if mark is not None:
                mark(type(opt).__name__)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: dict) -> None:
        """The saved moments and step counts; the hyperparameters stay those this optimizer was built with,
        so `sparknet resume --set optim.lr=...` takes effect."""
        for i, opt in enumerate(self.optimizers):
            settings = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            opt.load_state_dict(state[str(i)])
            for group, own in zip(opt.param_groups, settings):
                group.update(own)


def build_optimizer(model: torch.nn.Module, profile: Profile, device: torch.device) -> CombinedOptimizer:
    o = profile.optim
    fused = (o.fused and device.type == "cuda") or None
    adamw_groups = model.optimizer_groups(o.weight_decay)
    optimizers = []
    if o.name == "muon":
        matrices = model.matrix_parameters()
        optimizers.append(Muon(matrices, lr=o.muon_lr, momentum=o.muon_momentum))
    optimizers.insert(0, torch.optim.AdamW(adamw_groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused))
    held = {"all": (), "adamw": (Muon,), "muon": (torch.optim.AdamW,)}[profile.schedule.range_group]
    return CombinedOptimizer(optimizers, held=held if profile.schedule.decay == "range" else ())
