"""Reading a run's evaluation: eval.json (the final model's), or the newest evaluation of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path


def eval_path(run_dir: Path) -> Path:
    """eval.json (the final model's), else the newest evaluation of a checkpoint (eval-step-N.json)."""
    final = Path(run_dir) / "eval.json"
    if final.exists():
        return final
    return max(Path(run_dir).glob("eval-step-*.json"), default=final)


def read_eval(run_dir: Path) -> tuple[dict | None, str | None]:
    """The run's evaluation (see eval_path), or None and a one-line problem; (None, None) when there is none yet."""
    path = eval_path(run_dir)
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, f"{path}: unreadable ({e.__class__.__name__})"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object"
    return data, None
