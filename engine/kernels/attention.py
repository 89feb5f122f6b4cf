"""Which attention kernel a profile's shape gets on this GPU, and what each of PyTorch's would take.

`scaled_dot_product_attention` picks a kernel by its own priority (cuDNN, flash, memory-efficient, math on recent
PyTorch), among those that accept the shape and the device. Their speeds differ by more than 2x at the 70M
profiles' shape, and which one a new GPU gets is not documented, so `sparknet doctor` times each at the profile's
shape (forward and backward of one layer, causal, in the run's precision) and the default beside them."""

from __future__ import annotations

import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

from engine.config.schema import Profile

# the kernels worth timing on a GPU: the math one materialises the whole score matrix
BACKENDS = {"cuDNN": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "memory-efficient": SDPBackend.EFFICIENT_ATTENTION}
REPEATS = 10


def _layer_ms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: SDPBackend | None) -> float:
    """Milliseconds of one causal attention's forward and backward with `backend` (None: SDPA's own pick)."""
    def once() -> None:
        out = scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(torch.ones_like(out))

    with sdpa_kernel([backend]) if backend is not None else torch.enable_grad():
        for _ in range(2):
            once()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(REPEATS):
            once()
        end.record()
        torch.cuda.synchronize()
    return start.elapsed_time(end) / REPEATS


def attention_timings(profile: Profile, device: torch.device, use_bf16: bool) -> dict[str, float | str]:
    """{kernel: ms a layer, or why it cannot run} at the profile's micro-batch, heads, context and head width,
    with "SDPA's pick" for what a run gets. CUDA only."""
    m = profile.model
    shape = (profile.batch.micro_batch, m.n_head, m.context, m.n_embd // m.n_head)
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    timings: dict[str, float | str] = {}
    for name, backend in [*BACKENDS.items(), ("SDPA's pick", None)]:
        try:
            with warnings.catch_warnings():  # a refusing kernel also warns why; the line says it once
                warnings.simplefilter("ignore")
                timings[name] = _layer_ms(q, k, v, backend)
        except RuntimeError as e:  # the kernel refuses this shape, precision or device
            timings[name] = "cannot run here: " + " ".join(str(e).split())[:80]
    return timings


def attention_line(profile: Profile, device: torch.device, use_bf16: bool) -> str:
    """One line for `sparknet doctor`: each kernel's time and which one SDPA's pick matches."""
    if device.type != "cuda":
        return "N/A on the CPU (PyTorch's own CPU kernel; the GPU kernels are timed on a GPU)"
    m = profile.model
    shape = f"{profile.batch.micro_batch}x{m.n_head}x{m.context}x{m.n_embd // m.n_head}"
    timings = attention_timings(profile, device, use_bf16)
    picked = timings.pop("SDPA's pick")
    ran = {name: ms for name, ms in timings.items() if isinstance(ms, float)}
    parts = [f"{name} {ms:.2f} ms" if isinstance(ms, float) else f"{name} N/A" for name, ms in timings.items()]
    where = f"a layer's forward and backward at {shape}, causal, {'bf16' if use_bf16 else 'fp32'}"
    if not isinstance(picked, float) or not ran:
        return f"{', '.join(parts)} ({where}); SDPA's own pick N/A"
    nearest = min(ran, key=lambda name: abs(ran[name] - picked))
    fastest = min(ran, key=ran.get)
    verdict = "the fastest" if nearest == fastest else f"slower than {fastest}"
    return f"{', '.join(parts)} ({where}); SDPA picks about {picked:.2f} ms, as {nearest}: {verdict}"
