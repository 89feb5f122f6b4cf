"""What a healthy run of the default recipe goes through, drawn faintly beside a run's own loss.

The reference is `codelion-70m` trained on the 50/30/20 stand-in mix for 16M
tokens on one H100 (docs/lab/quality.md, "Curves"): training loss against tokens
seen. A run of the 1B-token recipe warms up over more tokens, so it starts a
little above this line; a run that stays far above it (a loss near ln of the
vocabulary, 10.8, after millions of tokens) is not learning.
"""

from __future__ import annotations

from engine.formatting import is_number

REFERENCE_PROFILE = "codelion-70m"
REFERENCE_LABEL = "codelion-70m reference (docs/lab/quality.md)"
# (tokens seen, training loss), from docs/lab/results/quality-codelion-70m.metrics.jsonl
CODELION_70M_LOSS = (
    (122_880, 10.92), (245_760, 10.30), (368_640, 9.95), (614_400, 9.40), (983_040, 8.75), (1_597_440, 7.90),
    (2_457_600, 7.31), (3_194_880, 7.23), (4_792_320, 6.98), (6_389_760, 6.83), (7_987_200, 6.64),
    (9_584_640, 6.51), (11_182_080, 6.39), (12_779_520, 6.39), (14_376_960, 6.36), (15_974_400, 6.27),
)


def reference_points(profile_name: str, tokens_per_step: float | None, last_step: float | None) -> list:
    """The reference as (step, loss) in the run's own steps, up to its last step; empty for other profiles."""
    if profile_name != REFERENCE_PROFILE or not is_number(tokens_per_step) or not is_number(last_step) \
            or tokens_per_step <= 0:
        return []
    points = [(tokens / tokens_per_step, loss) for tokens, loss in CODELION_70M_LOSS]
    return [(step, loss) for step, loss in points if step <= last_step]
