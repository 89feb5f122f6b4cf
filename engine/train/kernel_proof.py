"""Before the first step, each chosen fast path proves itself against the reference path on the real device.

A one-layer copy of the run's model (its width, heads, vocabulary and
architecture; 2 sequences of up to 64 tokens) runs one forward and backward
with the reference path, then once per fast piece with that piece alone on,
from the same weights and tokens. A piece whose run raises (a compile,
assembler or resource error), gives a non-finite value, or lands farther from
the reference than its tolerance is turned off: the run goes on with the
reference path for it, and the caller says so in a warning event.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch

from engine import one_line
from engine.config.loading import ModelConfig, Profile
from engine.hardware import distributed
from engine.kernels.choice import PIECES, REFERENCE, TITLES, KernelChoice, choose, probe_device
from engine.models.registry import build_model

log = logging.getLogger("sparknet")

# piece=raise|nan|wrong[,piece=...]: makes that piece's fast path fail its proof in that way (the CPU tests'
# stand-in for a kernel that breaks on some device)
FAULT_ENV = "SPARKNET_KERNEL_FAULT"
PROOF_SEQUENCES, PROOF_TOKENS = 2, 64
# relative distance from the reference allowed for (the loss, all gradients together)
TOLERANCE = {"fp32": (1e-4, 1e-3), "bf16": (2e-2, 5e-2), "fp8": (5e-2, 0.15)}


@dataclass(frozen=True)
class Proof:
    choice: KernelChoice  # the pieces that passed stay on; the others are off, with the reason
    failures: list  # (piece, one-line reason) for each piece turned off here
    seconds: float


def _faults() -> dict[str, str]:
    spec = os.environ.get(FAULT_ENV, "")
    return dict(item.split("=", 1) for item in spec.split(",") if "=" in item)


def _candidate(piece: str) -> KernelChoice:
    """The reference path with one piece on (the FP8 head runs inside the one-pass loss)."""
    if piece == "compile":
        return REFERENCE
    on = {"fused_loss": True, "fp8_head": True} if piece == "fp8_head" else {piece: True}
    return replace(REFERENCE, **on)


def _forward_backward(cfg: ModelConfig, choice: KernelChoice, state: dict, batch, device: torch.device,
                      use_bf16: bool, compiled: bool, fault: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    model = build_model(cfg, choice).to(device)
    model.load_state_dict(state)
    run = torch.compile(model) if compiled else model
    x, y = batch
    with torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext():
        if fault == "raise":
            raise RuntimeError("injected fault: the kernel failed to build")
        loss = run(x, y)
    if fault == "nan":
        loss = loss * float("nan")
    elif fault == "wrong":
        loss = loss * 1.5
    loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    return loss.detach().float(), grads


def _verdict(piece: str, result, reference, use_bf16: bool) -> str | None:
    """Why the fast result is not the reference's; None when it is, within tolerance."""
    loss, grads = result
    ref_loss, ref_grads = reference
    if not (torch.isfinite(loss) and torch.isfinite(grads).all()):
        return "non-finite loss or gradients on a test batch"
    kind = "fp8" if piece == "fp8_head" else "bf16" if use_bf16 else "fp32"
    loss_tol, grad_tol = TOLERANCE[kind]
    loss_off = float((loss - ref_loss).abs() / ref_loss.abs().clamp(min=1e-6))
    grad_off = float((grads - ref_grads).norm() / ref_grads.norm().clamp(min=1e-12))
    if loss_off > loss_tol or grad_off > grad_tol:
        return (f"differs from the reference path on a test batch (loss {loss_off:.1e} away, gradients "
                f"{grad_off:.1e}; tolerance {loss_tol:g} and {grad_tol:g})")
    return None


def _proof_inputs(cfg: ModelConfig, device: torch.device):
    tokens = min(cfg.context, PROOF_TOKENS)
    small = replace(cfg, n_layer=1, context=tokens, dropout=0.0)
    ids = torch.randint(0, cfg.vocab_size, (PROOF_SEQUENCES, tokens + 1), device=device)
    state = {k: v.to(device) for k, v in build_model(small).state_dict().items()}
    return small, state, (ids[:, :-1], ids[:, 1:])


def prove(choice: KernelChoice, cfg: ModelConfig, device: torch.device, use_bf16: bool) -> Proof:
    """Each piece `choice` has on, tried alone against the reference path; the RNG state is left as it was."""
    t0 = time.monotonic()
    wanted = [p for p in PIECES if choice.on(p)]
    if not wanted:
        return Proof(choice, [], 0.0)
    faults, failures = _faults(), []
    # the compiler's advice about the proof's tiny model is not the run's
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        small, state, batch = _proof_inputs(cfg, device)
        reference = _forward_backward(small, REFERENCE, state, batch, device, use_bf16, False, None)
        for piece in wanted:
            if not choice.on(piece):
                continue  # turned off with another piece (the FP8 head with the one-pass loss)
            try:
                result = _forward_backward(small, _candidate(piece), state, batch, device, use_bf16,
                                           compiled=piece == "compile", fault=faults.get(piece))
                reason = _verdict(piece, result, reference, use_bf16)
            except Exception as e:  # the run never crashes for a kernel's sake: the reference path takes over
                reason = one_line(e, 160)
            if reason:
                failures.append((piece, reason))
                choice = choice.turned_off(piece, f"fell back at start: {reason}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Proof(choice, failures, time.monotonic() - t0)


def fallback_message(piece: str, reason: str) -> str:
    return f"{TITLES[piece]} off: {reason}; the reference path runs instead"


def settle_kernels(profile: Profile, device: torch.device, use_bf16: bool, world: int, on_event) -> Proof:
    """What this run's model runs: probe the device, choose, prove the choice; every process keeps only the pieces
    that passed on all of them. Each fallback is a warning event; the choice goes to the log."""
    facts = probe_device(device)
    proof = prove(choose(facts, profile.run, profile.model, use_bf16), profile.model, device, use_bf16)
    choice = proof.choice
    for piece, reason in proof.failures:
        on_event("warning", fallback_message(piece, reason), piece=piece)
    for other in distributed.gather(choice.as_dict(), world):
        for piece in PIECES:
            if choice.on(piece) and not other[piece]:
                choice = choice.turned_off(piece, "fell back at start in another process of the run")
    log.info("fast paths (proven in %.1f s): %s", proof.seconds, choice.summary())
    return replace(proof, choice=choice)
