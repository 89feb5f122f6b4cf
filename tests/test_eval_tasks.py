"""Downstream benchmarks through the real lm-evaluation-harness, offline: a task defined as harness YAML over local
JSON data that the test writes, scored on a tiny model; eval.json holds what the harness's own API returns."""

from __future__ import annotations

import json
import random

import pytest
from cli_helpers import sparknet
from eval_helpers import WIKITEXT_DIR, tiny_model

from engine import SparkNetError
from engine.evaluate import eval_command
from engine.evaluate.tasks import CARD_TASKS, parse_tasks
from engine.models.export_hf import export_hf

TASK = "sums_local"


@pytest.fixture
def task_dir(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    rnd = random.Random(0)
    with open(folder / "sums.jsonl", "w") as f:
        for _ in range(40):
            a, b = rnd.randint(1, 9), rnd.randint(1, 9)
            choices = [str(a + b), str(a + b + 1), str(a * b + 3), str(abs(a - b) + 10)]
            f.write(json.dumps({"question": f"{a} plus {b} is", "choices": choices, "label": 0}) + "\n")
    (folder / "sums.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / "sums.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
num_fewshot: 0
""")
    return folder


@pytest.fixture
def model_dir(tmp_path, tok):
    return export_hf(tiny_model(), tmp_path / "model", tok)


@pytest.mark.slow
def test_eval_json_holds_what_the_harness_itself_returns(model_dir, task_dir, monkeypatch):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert eval_command(str(model_dir), tasks=[TASK], task_path=str(task_dir), device="cpu") == 0
    (row,) = json.loads((model_dir / "eval.json").read_text())["benchmarks"]["tasks"]
    direct = lm_eval.simple_evaluate(model=HFLM(pretrained=str(model_dir), device="cpu", batch_size=8),
                                     tasks=[TASK],
                                     task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    result = direct["results"][TASK]
    assert row["value"] == pytest.approx(100 * result["acc,none"])
    assert row["stderr"] == pytest.approx(100 * result["acc_stderr,none"])
    assert (row["task"], row["metric"], row["examples"], row["num_fewshot"]) == (TASK, "acc", 40, 0)
    assert row["harness_version"] == lm_eval.__version__
    assert row["chance"] is None  # a task of its own: no chance level is known for it


@pytest.mark.slow
def test_benchmarks_and_perplexity_share_eval_json(model_dir, task_dir, capsys):
    eval_command(str(model_dir), protocol="standard", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=100)
    eval_command(str(model_dir), tasks=[TASK], task_path=str(task_dir), device="cpu", limit=10)
    doc = json.loads((model_dir / "eval.json").read_text())
    assert [s["protocol"]["name"] for s in doc["evaluations"]] == ["standard"]  # kept
    assert doc["benchmarks"]["tasks"][0]["examples"] == 10 and doc["benchmarks"]["limit"] == 10
    out = capsys.readouterr().out
    assert "downstream benchmarks (lm-eval" in out and "capped at 10 examples per task" in out
    eval_command(str(model_dir), protocol="sparknet-2000", wikitext=str(WIKITEXT_DIR), samples=False, max_tokens=100)
    assert json.loads((model_dir / "eval.json").read_text())["benchmarks"]["limit"] == 10  # and kept again


@pytest.mark.slow
def test_an_unknown_task_is_one_line_and_writes_nothing(model_dir, task_dir):
    with pytest.raises(SparkNetError, match="knows no task no_such_task"):
        eval_command(str(model_dir), tasks=["no_such_task"], task_path=str(task_dir), device="cpu")
    assert not (model_dir / "eval.json").exists()


def test_card_names_the_cards_six_tasks_and_the_table_shows_them_with_chance():
    assert parse_tasks("card") == list(CARD_TASKS)
    assert parse_tasks("piqa, card")[:2] == ["piqa", "mmlu"]
    from rich.console import Console

    from engine.evaluate.report import print_benchmarks

    console = Console(width=160, record=True)
    print_benchmarks({"harness": "lm-eval 0.4", "limit": None, "published": [
        {"task": "piqa", "CodeLion GPT-2 70M": 57.29, "GPT-2 (124M)": 63.0, "source": "codelion/gpt-2-70m model card"}],
        "tasks": [{"task": "piqa", "metric": "acc_norm", "value": 58.0, "stderr": 1.2, "examples": 1838,
                   "num_fewshot": 0, "chance": 50.0, "harness_version": "0.4"}]}, console)
    text = console.export_text()
    assert "57.29 ≈" in text and "63.00 ≈" not in text  # 0.71 is inside two standard errors, 5.0 is not
    assert "50" in text and "1,838" in text and "codelion/gpt-2-70m model card" in text


@pytest.mark.slow
def test_the_cli_runs_a_local_task(model_dir, task_dir):
    proc = sparknet("eval", str(model_dir), "--tasks", f"{TASK},{TASK}", "--task-path", str(task_dir), "--limit",
                    "8", "--device", "cpu", timeout=300)
    assert TASK in proc.stdout and "downstream benchmarks" in proc.stdout
    # one task after another, each announced, each with its own wall time
    assert proc.stderr.index("sparknet eval: indexing lm-eval's tasks") < proc.stderr.index(
        f"sparknet eval: benchmark {TASK} (1 of 2)")
    assert f"sparknet eval: benchmark {TASK} (2 of 2)" in proc.stderr
    rows = json.loads((model_dir / "eval.json").read_text())["benchmarks"]["tasks"]
    assert all(row["wall_s"] > 0 for row in rows)
    bad = sparknet("eval", str(model_dir), "--tasks", "", check=False)
    assert bad.returncode == 2 and "--tasks" in bad.stderr


@pytest.mark.slow
def test_a_baseline_is_measured_on_the_same_tasks_where_its_weights_load(model_dir, task_dir, tmp_path, tok,
                                                                         capsys):
    """--baseline-dir gpt2=DIR scores that folder with the harness too and the table shows it as measured; a
    baseline whose weights do not load (CodeLion from the hub, offline) keeps its published figures and says why."""
    import lm_eval

    other = export_hf(tiny_model(seed=7), tmp_path / "gpt2-stand-in", tok)
    assert eval_command(str(model_dir), tasks=[TASK], task_path=str(task_dir), device="cpu", baselines=True,
                        baseline_dirs={"gpt2": str(other)}) == 0
    baselines = json.loads((model_dir / "eval.json").read_text())["benchmarks"]["baselines"]
    direct = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={other}", tasks=[TASK], device="cpu",
                                     task_manager=lm_eval.tasks.TaskManager(include_path=str(task_dir),
                                                                            include_defaults=False))
    gpt2 = baselines["GPT-2 (124M)"]
    assert (gpt2["source"], gpt2["path"]) == ("measured", str(other))
    assert gpt2["tasks"][TASK]["value"] == pytest.approx(100 * direct["results"][TASK]["acc,none"])
    codelion = baselines["CodeLion GPT-2 70M"]
    assert codelion["source"] == "published" and codelion["reason"]
    captured = capsys.readouterr()
    assert captured.err.count("indexing lm-eval's tasks") == 1  # one index for the model and both baselines
    out = captured.out
    assert f"GPT-2 (124M): measured here, from {other}" in out
    assert "CodeLion GPT-2 70M: not measured (" in out
    assert f"{gpt2['tasks'][TASK]['value']:.2f}" in out.split(TASK, 1)[1].splitlines()[0]  # in the task's row
