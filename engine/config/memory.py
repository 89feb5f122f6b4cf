"""A profile's peak memory, estimated without torch before a run exists: the weights with their gradients and
optimizer state, the activations one micro-batch keeps for the backward pass, and the output layer's logits.

The activation figure is fitted to the peaks measured on an H100 (docs/lab/performance.md): `codelion-70m` at a
micro-batch of 120 x 1024 peaked at 47.0 GiB and `modern-70m` at 60 x 1024 at 25 GiB, about 52 bytes of
activations per token, layer and unit of width under bf16, beside one bf16 logits buffer. Treat it as an
estimate within some tens of percent: it exists to refuse runs that cannot fit, not to pack a GPU to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.model_size import model_parameter_count, padded_vocab
from engine.config.schema import Profile

STATE_BYTES_PER_PARAMETER = 16  # fp32 weights and gradients, and two fp32 moments (AdamW; Muon keeps fewer)
ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH = 52  # under bf16; fp32 precision doubles it


@dataclass(frozen=True)
class MemoryEstimate:
    state_b: int  # weights, gradients and optimizer state
    activations_b: int  # what one micro-batch keeps for its backward pass
    logits_b: int  # the output layer's logits of one micro-batch

    @property
    def total_b(self) -> int:
        return self.state_b + self.activations_b + self.logits_b


def estimate_memory(profile: Profile, micro_batch: int | None = None) -> MemoryEstimate:
    m = profile.model
    tokens = (micro_batch or profile.batch.micro_batch) * m.context
    element = 2 if profile.run.precision == "bf16" else 4
    activations = tokens * m.n_layer * m.n_embd * ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH * element // 2
    return MemoryEstimate(state_b=STATE_BYTES_PER_PARAMETER * model_parameter_count(m), activations_b=activations,
                          logits_b=tokens * padded_vocab(m) * element)


def largest_fitting_micro_batch(profile: Profile, free_b: int) -> int | None:
    """The largest micro-batch that divides the micro-batches of a step (so the tokens a step holds stay the
    same, with more accumulation) and whose estimate fits in free_b; None when not even 1 fits."""
    per_step = profile.batch.micro_batch * profile.batch.grad_accum
    for micro_batch in range(profile.batch.micro_batch, 0, -1):
        if per_step % micro_batch == 0 and estimate_memory(profile, micro_batch).total_b <= free_b:
            return micro_batch
    return None
