"""The trainer's validator: loss on the mix's held-out windows and, where the mix's tokenizer allows, a capped
WikiText-2 perplexity, each on the model as it stands."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from engine import SparkNetError
from engine.config.schema import MixConfig, Profile


@torch.no_grad()
def held_out_loss(loss_of: Callable[[torch.Tensor], torch.Tensor], mix: MixConfig, tokens: int, batch: int,
                  context: int, device: torch.device, lengths: dict[str, int] | None = None) -> float:
    """loss_of(windows) is the mean loss of a (rows, context + 1) batch of token windows on `device`; `lengths`
    as for validation_batches. The same windows every call; the mean over sequences."""
    from engine.data import validation_batches

    total, count = 0.0, 0
    for arr in validation_batches(mix, tokens, batch=batch, context=context, lengths=lengths):
        windows = torch.from_numpy(arr).to(device)
        total += loss_of(windows).item() * windows.size(0)
        count += windows.size(0)
    return total / max(1, count)


class Validator:
    """What a run measures on data it does not train on. `lengths` are the validation splits' sizes the run
    started with, kept in its checkpoints so that a resumed run scores the same windows."""

    def __init__(self, profile: Profile, mix: MixConfig, device: torch.device, use_bf16: bool,
                 lengths: dict[str, int] | None):
        self.profile, self.mix, self.device, self.use_bf16 = profile, mix, device, use_bf16
        self.lengths = lengths
        self.wikitext_ids = None

    def autocast(self):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.use_bf16 else nullcontext()

    def load_wikitext(self, on_warning: Callable[[str], None]) -> None:
        """The WikiText-2 test tokens for the in-training score; off, with a warning, when they cannot be had."""
        from engine.data.tokenizer import load_tokenizer
        from engine.evaluate import load_wikitext_ids

        try:
            self.wikitext_ids, _ = load_wikitext_ids(load_tokenizer(self.mix.tokenizer), split="test",
                                                     max_ids=self.profile.run.wikitext_tokens + 1)
        except SparkNetError as e:
            on_warning(f"in-training WikiText-2 evaluation off: {e}")

    @torch.no_grad()
    def loss(self, model: torch.nn.Module) -> float:
        p = self.profile

        def loss_of(windows: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return model(windows[:, :-1], windows[:, 1:])

        model.eval()
        loss = held_out_loss(loss_of, self.mix, p.run.eval_tokens, p.batch.micro_batch, p.model.context, self.device,
                             self.lengths)
        model.train()
        return loss

    def wikitext_ppl(self, model: torch.nn.Module) -> float | None:
        from engine.evaluate import capped_wikitext_eval

        p = self.profile
        result = capped_wikitext_eval(model, self.wikitext_ids, p.run.wikitext_tokens, p.model.context, None,
                                      self.device, autocast_dtype=torch.bfloat16 if self.use_bf16 else None)
        return result["ppl"]
