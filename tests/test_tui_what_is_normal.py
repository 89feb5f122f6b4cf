"""What the panel says where a figure would surprise, on real run directories written as the engine writes them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sparknet_tui.watch import RunWatcher


def synthetic_run(folder: Path, profile_name: str, vocab_size: int, tokens_per_step: int, losses: list[float],
                  val_loss: float) -> Path:
    """A run directory as the engine writes one, with chosen figures."""
    folder.mkdir()
    (folder / "run.toml").write_text(f'profile_name = "{profile_name}"\nmix_name = "m"\n'
                                     f'[profile.model]\nvocab_size = {vocab_size}\n[mix]\n')
    (folder / "status.json").write_text(json.dumps({"state": "finished", "step": len(losses)}))
    rows = [{"step": i + 1, "tokens": (i + 1) * tokens_per_step, "loss": loss} for i, loss in enumerate(losses)]
    rows[-1]["val_loss"] = val_loss
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_the_default_recipe_draws_the_healthy_reference_beside_its_loss(tmp_path):
    from sparknet_tui.reference_curve import CODELION_70M_LOSS, REFERENCE_LABEL
    from sparknet_tui.screens.live import chart_data

    run = synthetic_run(tmp_path / "codelion", "codelion-70m", 50257, 122_880, [10.9 - 0.05 * i for i in range(40)],
                        8.9)
    (reference,) = [s for s in chart_data(RunWatcher(run).poll(), 0.6).series if s.label == REFERENCE_LABEL]
    # in the run's own steps (122,880 tokens each, as the reference's), up to its last step
    assert reference.points == [(tokens / 122_880, loss) for tokens, loss in CODELION_70M_LOSS if tokens <= 40 * 122_880]
    other = synthetic_run(tmp_path / "tiny", "tiny-cpu", 1024, 2048, [6.0] * 40, 5.0)
    assert all(s.label != REFERENCE_LABEL for s in chart_data(RunWatcher(other).poll(), 0.6).series)


def test_a_validation_perplexity_above_the_vocabulary_is_called_worse_than_a_uniform_guess(tmp_path):
    from sparknet_tui.screens.live import figures_text

    early = synthetic_run(tmp_path / "early", "tiny-cpu", 1024, 2048, [7.0, 7.0], math.log(1024) + 0.1)
    assert "worse than a uniform guess" in figures_text(RunWatcher(early).poll()).plain
    later = synthetic_run(tmp_path / "later", "tiny-cpu", 1024, 2048, [5.0, 5.0], math.log(1024) - 0.1)
    assert "uniform guess" not in figures_text(RunWatcher(later).poll()).plain
