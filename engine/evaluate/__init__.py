"""Evaluation: WikiText-2 under the standard sliding-window protocol and the published 2,000-line protocol, a run's
own held-out text (the demo's), baselines, eval.json.

Public entry points:
  eval_command(target, ...)           `sparknet eval`: a table per protocol on stdout, eval.json in the run
  load_wikitext_ids(tokenizer, ...)   the standard protocol's token stream and byte counter
  capped_wikitext_eval(model, ids, max_tokens, context, stride, device, autocast_dtype=None)
                                      the trainer's periodic wikitext_ppl
"""

from engine.evaluate.command import compute_deltas, eval_command
from engine.evaluate.models import BASELINES, LoadedModel, load_baseline, load_model_folder, load_target
from engine.evaluate.protocols import PROTOCOLS
from engine.evaluate.report import print_report
from engine.evaluate.scoring import (
                                    ScoringModel,
                                    as_scoring_model,
                                    bits_per_byte,
                                    capped_wikitext_eval,
                                    sample_continuations,
                                    score_lines,
                                    score_stream,
                                    sliding_windows,
)
from engine.evaluate.wikitext import (
                                    byte_counter,
                                    load_wikitext_ids,
                                    rows_from_file,
                                    sparknet_2000_lines,
                                    standard_text,
                                    wikitext_rows,
)

__all__ = [
    "BASELINES", "LoadedModel", "PROTOCOLS", "ScoringModel", "as_scoring_model", "bits_per_byte",
    "byte_counter", "capped_wikitext_eval", "compute_deltas", "eval_command", "load_baseline", "load_model_folder",
    "load_target", "load_wikitext_ids", "print_report", "rows_from_file", "sample_continuations", "score_lines",
    "score_stream", "sliding_windows", "sparknet_2000_lines", "standard_text", "wikitext_rows",
]
