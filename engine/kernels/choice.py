"""What runs on this device: the facts about it, and per piece of the network the fast path or the reference one.

A piece is one of the engine's fast paths. Each has a reference path in plain
PyTorch that computes the same function, so choosing decides speed, never the
model. `choose` takes the device's facts and the profile's wishes (a profile
can force a piece off; it cannot force one on where the device cannot run it)
and gives each piece its state and one line of why. engine/train/kernel_proof.py then
runs each chosen fast path once against the reference before training starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch

from engine import one_line
from engine.config.architectures import ARCHITECTURES
from engine.config.loading import ModelConfig, RunConfig
from engine.kernels.triton_support import tl, triton

# the pieces, in the order they are proven and shown, with the names a user reads
PIECES = ("compile", "fused_loss", "fp8_head", "fused_gelu", "fused_qk_rope", "bf16_residual")
TITLES = {
    "compile": "torch.compile",
    "fused_loss": "one-pass loss",
    "fp8_head": "FP8 output layer",
    "fused_gelu": "fused GELU",
    "fused_qk_rope": "fused QK-norm and rotary",
    "bf16_residual": "bf16 residual stream",
}
# the pieces that are the engine's own Triton kernels (the FP8 head runs inside the one-pass loss's)
OWN_KERNELS = ("fused_loss", "fused_gelu", "fused_qk_rope")
# Triton before 3.6 has no ptxas that assembles for sm_12x (the DGX Spark's GB10 is sm_121)
TRITON_FOR_CAPABILITY_12 = (3, 6)
# the most shared memory one block of the engine's own Triton kernels uses at the configurations it launches (the
# FP8 transpose's 128 x 128 tile; lab/kernel_resources.py measures each); a GB10 block may use 101,376 bytes
ENGINE_SHARED_MEMORY_B = 16_384


@dataclass(frozen=True)
class DeviceFacts:
    """What the probe found; None where the device does not say."""

    kind: str  # cuda | cpu
    name: str
    capability: tuple[int, int] | None = None
    shared_memory_per_block: int | None = None  # bytes one block may use (opt-in maximum)
    bf16: bool = False
    triton_version: str | None = None
    triton_error: str | None = None  # why Triton cannot run here; None when a kernel compiled and ran
    unified_memory: bool | None = None
    total_memory_b: int | None = None

    @property
    def triton_problem(self) -> str | None:
        """Why Triton kernels (the engine's own and torch.compile's) cannot run here; None when they can."""
        if self.triton_error:
            return self.triton_error
        major, minor = self.capability or (0, 0)
        if self.kind == "cuda" and major >= 12 and _version_tuple(self.triton_version) < TRITON_FOR_CAPABILITY_12:
            return (f"Triton {self.triton_version} cannot assemble for sm_{major}{minor} (Triton 3.6 or newer can; "
                    "torch 2.10 and later bring it)")
        return None

    @property
    def fp8(self) -> bool:
        """FP8 tensor-core products with one scale per operand (compute capability 8.9 and newer)."""
        return self.capability is not None and tuple(self.capability) >= (8, 9)


@dataclass(frozen=True)
class KernelChoice:
    """Per piece: on (the fast path) or off (the reference path), and why."""

    compile: bool = False
    fused_loss: bool = False
    fp8_head: bool = False
    fused_gelu: bool = False
    fused_qk_rope: bool = False
    bf16_residual: bool = False
    reasons: dict = field(default_factory=dict, compare=False)

    def on(self, piece: str) -> bool:
        return bool(getattr(self, piece))

    def turned_off(self, piece: str, reason: str) -> "KernelChoice":
        off = {piece: False}
        if piece == "fused_loss":
            off["fp8_head"] = False  # the FP8 head is part of the one-pass loss
        reasons = dict(self.reasons)
        for name in off:
            if self.on(name):
                reasons[name] = reason if name == piece else f"off with the {TITLES[piece]}"
        return replace(self, reasons=reasons, **off)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "KernelChoice":
        data = dict(data or {})
        return cls(**{k: bool(data.get(k, False)) for k in PIECES}, reasons=dict(data.get("reasons", {})))

    def summary(self) -> str:
        return ", ".join(f"{TITLES[p]} {'on' if self.on(p) else 'off'}" for p in PIECES)


REFERENCE = KernelChoice(reasons={p: "the reference path" for p in PIECES})


if triton is not None:
    @triton.jit
    def _add_one_kernel(x_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < n
        tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=inside) + 1.0, mask=inside)


def _triton_check(device: torch.device) -> tuple[str | None, str | None]:
    """(Triton's version, why it cannot run here or None): a one-line kernel is compiled and run on the device."""
    if triton is None:
        return None, "Triton is not installed (CUDA builds of torch bring it)"
    try:
        x = torch.zeros(100, device=device)
        _add_one_kernel[(1,)](x, x.numel(), BLOCK=128)
        if not bool((x == 1.0).all()):
            return triton.__version__, "a test kernel ran but computed a wrong value"
    except Exception as e:  # any compile or assembler error: the message says which
        return triton.__version__, one_line(e, 160)
    return triton.__version__, None


def probe_device(device: torch.device) -> DeviceFacts:
    """The facts `choose` needs, read from the device itself (a Triton kernel is compiled and run on CUDA)."""
    if device.type != "cuda":
        return DeviceFacts(kind="cpu", name="cpu")
    props = torch.cuda.get_device_properties(device)
    version, error = _triton_check(device)
    return DeviceFacts(
        kind="cuda", name=props.name, capability=(props.major, props.minor),
        shared_memory_per_block=getattr(props, "shared_memory_per_block_optin", None)
        or getattr(props, "shared_memory_per_block", None),
        bf16=torch.cuda.is_bf16_supported(), triton_version=version, triton_error=error,
        unified_memory=bool(getattr(props, "is_integrated", False)), total_memory_b=props.total_memory)


def _version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for part in (version or "0").split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# why an architecture's own piece does not apply to a model
NOT_USED = {"fused_gelu": "its MLP has no GELU with a bias", "fused_qk_rope": "it has no QK-norm or rotary embeddings"}


def _device_reason(piece: str, facts: DeviceFacts, model: ModelConfig, use_bf16: bool) -> str | None:
    """Why `piece`'s fast path cannot run for this model on this device; None when it can."""
    cuda = facts.kind == "cuda"
    if piece in NOT_USED and (piece not in ARCHITECTURES[model.arch].own_kernels or
                              (piece == "fused_gelu" and not model.bias)):
        return f"not used by this model ({NOT_USED[piece]})"
    major, minor = facts.capability or (0, 0)
    triton_kernels = piece in OWN_KERNELS or piece == "fp8_head"
    if (triton_kernels or piece == "compile") and cuda and facts.triton_problem:
        return facts.triton_problem
    smem = facts.shared_memory_per_block
    if triton_kernels and cuda and smem is not None and smem < ENGINE_SHARED_MEMORY_B:
        return f"its kernels need {ENGINE_SHARED_MEMORY_B:,} bytes of shared memory per block; this device has {smem:,}"
    if piece in OWN_KERNELS and not cuda:
        return "its kernel is Triton's, for CUDA; off CUDA the reference path is the faster one"
    if piece == "fp8_head" and not cuda:
        return "no FP8 tensor cores off CUDA"
    if piece == "fp8_head" and not facts.fp8:
        return f"no FP8 tensor cores (compute capability {major}.{minor}; 8.9 or newer has them)"
    if piece == "bf16_residual" and not use_bf16:
        return "the run trains in fp32" if cuda else "fp32 on CPU"
    if piece == "bf16_residual" and not facts.bf16:
        return f"no bf16 arithmetic (compute capability {major}.{minor})"
    return None


def choose(facts: DeviceFacts, run: RunConfig, model: ModelConfig, use_bf16: bool) -> KernelChoice:
    """Each piece on where the profile allows it and the device can run it; the reason either way."""
    states, reasons = {}, {}
    for piece in PIECES:
        wanted = bool(getattr(run, piece))
        blocked = _device_reason(piece, facts, model, use_bf16)
        if piece == "fp8_head" and wanted and not states.get("fused_loss"):
            blocked = blocked or "needs the one-pass loss"
        states[piece] = wanted and blocked is None
        if not wanted:
            reasons[piece] = f"off in the profile (run.{piece} = false)"
        elif blocked:
            reasons[piece] = blocked
        else:
            reasons[piece] = "on"
    return KernelChoice(**states, reasons=reasons)
