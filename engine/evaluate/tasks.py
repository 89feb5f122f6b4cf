"""Downstream benchmarks through EleutherAI's lm-evaluation-harness: the table of CodeLion's model card.

The harness scores the model folder through its Hugging Face class with each
task's own few-shot setting; each row keeps the metric, its standard error,
the number of examples, the few-shot count and the harness version, beside
the card's published figures and the task's chance level.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from engine import SparkNetError, one_line
from engine.runs.eval_progress import ProgressFile

# the card's set: codelion/gpt-2-70m's table
CARD_TASKS = ("mmlu", "hellaswag", "arc_challenge", "piqa", "winogrande", "truthfulqa_mc2")
# the metric each task is reported by (the harness's acc_norm where length normalisation is the convention)
TASK_METRICS = {"mmlu": "acc", "hellaswag": "acc_norm", "arc_challenge": "acc_norm", "arc_easy": "acc_norm",
                "piqa": "acc_norm", "winogrande": "acc", "truthfulqa_mc2": "acc"}
# what guessing scores, in percent (None where it depends on each question's number of answers)
CHANCE = {"mmlu": 25.0, "hellaswag": 25.0, "arc_challenge": 25.0, "arc_easy": 25.0, "piqa": 50.0,
          "winogrande": 50.0, "truthfulqa_mc2": None}
CARD_SOURCE = "codelion/gpt-2-70m model card"
# task -> (CodeLion 70M, GPT-2 124M), as the card gives them; the blog post gives GPT-2 40.69 on TruthfulQA MC2
PUBLISHED_CARD = {"mmlu": (24.11, 26.0), "hellaswag": (27.03, 30.0), "arc_challenge": (21.67, 24.0),
                  "piqa": (57.29, 63.0), "winogrande": (51.46, 51.0), "truthfulqa_mc2": (47.31, 40.0)}


def parse_tasks(text: str) -> list[str]:
    """`--tasks a,b` or `--tasks card`."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise SparkNetError("--tasks: name tasks, e.g. --tasks hellaswag,piqa, or --tasks card for the card's set")
    return [t for name in tasks for t in (CARD_TASKS if name == "card" else (name,))]


def _metric_of(task: str, result: dict) -> str:
    wanted = TASK_METRICS.get(task)
    names = [k.split(",")[0] for k in result if "," in k and not k.split(",")[0].endswith("_stderr")]
    if wanted in names:
        return wanted
    if not names:
        raise SparkNetError(f"lm-eval task {task}: no metric in its results")
    return names[0]


def benchmark_rows(results: dict, harness_version: str) -> list[dict]:
    """The harness's results dict -> one row per task, in percent."""
    rows = []
    for task, result in results["results"].items():
        metric = _metric_of(task, result)
        value, stderr = result.get(f"{metric},none"), result.get(f"{metric}_stderr,none")
        samples = results.get("n-samples", {}).get(task, {})
        rows.append({
            "task": task, "metric": metric,
            "value": None if value is None else 100.0 * value,
            "stderr": None if not isinstance(stderr, (int, float)) or math.isnan(stderr) else 100.0 * stderr,
            "examples": samples.get("effective"), "num_fewshot": results.get("n-shot", {}).get(task),
            "chance": CHANCE.get(task), "harness_version": harness_version,
        })
    return rows


def published_rows(tasks: list[str]) -> list[dict]:
    out = []
    for task in tasks:
        if task in PUBLISHED_CARD:
            codelion, gpt2 = PUBLISHED_CARD[task]
            out.append({"task": task, "CodeLion GPT-2 70M": codelion, "GPT-2 (124M)": gpt2, "source": CARD_SOURCE})
    return out


def task_index(tasks: list[str], task_path: str | None, progress: ProgressFile | None = None):
    """The harness's index of the tasks asked for (an lm_eval TaskManager), built once per evaluation; a task it
    does not know is a one-line error. The folder's own tasks alone when they are every task asked for, since
    indexing the harness's thousands of built-in tasks takes longer than scoring a small model on a small task."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise SparkNetError("--tasks needs lm-evaluation-harness: pip install 'lm-eval>=0.4,<0.5'") from None
    announce("indexing lm-eval's tasks", progress)  # the harness's own index alone takes seconds
    if task_path:
        local = TaskManager(include_path=task_path, include_defaults=False)
        manager = local if all(t in local.all_tasks for t in tasks) else TaskManager(include_path=task_path)
    else:
        manager = TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise SparkNetError(f"--tasks: lm-eval knows no task {', '.join(unknown)}"
                            + ("" if task_path else "; give a folder of task YAML files with --task-path DIR"))
    return manager


def announce(stage: str, progress: ProgressFile | None) -> None:
    """A stage of the benchmarks, on stderr and in the run's progress file."""
    print(f"sparknet eval: {stage}", file=sys.stderr, flush=True)
    if progress is not None:
        progress.stage(stage, None, "")


def run_benchmarks(model_dir: Path | str, tasks: list[str], device: str, index, limit: int | None = None,
                   progress: ProgressFile | None = None, who: str = "") -> dict:
    """lm-eval's simple_evaluate on a Hugging Face model folder, one task after another (the model loaded once),
    so progress and each task's wall time can be told; the part of eval.json it fills. index: task_index's."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), device=device, batch_size=8)
    version = getattr(lm_eval, "__version__", "unknown")
    rows = []
    for i, task in enumerate(tasks):
        announce(f"benchmark {task} ({i + 1} of {len(tasks)}){f' of {who}' if who else ''}", progress)
        started = time.monotonic()
        results = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=index, limit=limit,
                                          log_samples=False)
        wall_s = round(time.monotonic() - started, 1)
        rows += [dict(row, wall_s=wall_s) for row in benchmark_rows(results, version)]
    return {"harness": f"lm-eval {version}", "limit": limit, "tasks": rows, "published": published_rows(tasks)}


def measure_baselines(tasks: list[str], device: str, index, limit: int | None, live: bool, dirs: dict[str, str],
                      progress: ProgressFile | None = None) -> dict:
    """The card's models scored on the same tasks where asked for (--baselines: from the hub; --baseline-dir
    NAME=DIR: a local folder) and their weights load; a model that does not load says why and keeps its
    published figures."""
    from engine.evaluate.models import BASELINES

    measured = {}
    for b in BASELINES:
        if not (live or b.key in dirs):
            continue
        source = dirs.get(b.key) or b.hf_id
        try:
            rows = run_benchmarks(source, tasks, device, index, limit, progress, who=b.name)["tasks"]
        except Exception as e:  # any failure to load or run it: show the published figures, say why
            reason = one_line(e)
            print(f"sparknet eval: {b.name}: {reason}; showing its published figures", file=sys.stderr)
            measured[b.name] = {"source": "published", "path": source, "reason": reason}
            continue
        measured[b.name] = {"source": "measured", "path": source, "tasks": {r["task"]: r for r in rows}}
    return measured

