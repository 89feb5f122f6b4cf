"""What `sparknet resume` may change about a run, and what it needs before it starts. No torch here."""

from __future__ import annotations

import copy

from engine import SparkNetError
from engine.config.loading import apply_overrides, dump_toml, parse_override, profile_from_dict, read_toml
from engine.files import utc_now, write_text_atomic
from engine.runs.rundir import iter_checkpoints, newest_checkpoint_step

# Keys that change how the rest of a run trains without changing what it is: the optimizer, the schedule,
# the intervals and the thermal guard. The model, batch, token budget and data stay the run's own.
RESUMABLE_SECTIONS = ("optim.", "schedule.", "thermal.")
RESUMABLE_RUN_KEYS = ("log_every", "eval_every", "eval_tokens", "checkpoint_every", "keep_checkpoints",
                      "spike_factor", "wikitext_every", "wikitext_tokens", "final_eval", "final_eval_tokens")


def apply_resume_overrides(run_dir, overrides: list[str]) -> None:
    """Validate `--set` overrides for a resume and record them in run.toml (profile and resume_overrides)."""
    path = run_dir / "run.toml"
    data = read_toml(path)
    for text in overrides:
        key, _ = parse_override(text)
        if not (key.startswith(RESUMABLE_SECTIONS) or key in (f"run.{k}" for k in RESUMABLE_RUN_KEYS)):
            raise SparkNetError(f"--set {text}: resume can change optim.*, schedule.*, thermal.* and the run's "
                                f"intervals ({', '.join('run.' + k for k in RESUMABLE_RUN_KEYS)}); start a new "
                                "run to change anything else")
    profile_data = apply_overrides(copy.deepcopy(data["profile"]), overrides)
    profile_from_dict(copy.deepcopy(profile_data), f"{path} with --set {' '.join(overrides)}",
                      name=data.get("profile_name", ""))
    data["profile"] = profile_data
    step = newest_checkpoint_step(run_dir) or 0
    data["resume_overrides"] = list(data.get("resume_overrides", [])) + [
        {"at": utc_now(), "newest_checkpoint_step": step, "set": list(overrides)}]
    write_text_atomic(path, dump_toml(data))


def checkpoint_size(run_dir) -> int:
    """Bytes of the run's newest checkpoint (0 when it has none): what the next one will need on disk."""
    for path in iter_checkpoints(run_dir):
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return 0
