"""`sparknet eval`: score a run or model folder on WikiText-2 beside GPT-2 and CodeLion's 70M, or a demo run
on its own held-out text.

Prints a table per protocol and writes eval.json (see docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine import SparkNetError, __version__
from engine.config.paths import writable_folder
from engine.evaluate.models import (
    BASELINES,
    Baseline,
    BaselineUnavailable,
    LoadedModel,
    baseline_for,
    is_gpt2_tokenizer,
    load_baseline,
    load_target,
)
from engine.evaluate.protocols import PROTOCOLS, WIKITEXT_PROTOCOLS, Advance, make_protocol, protocols_for
from engine.evaluate.published import PUBLISHED, PUBLISHED_TOKENIZER
from engine.evaluate.report import print_report
from engine.evaluate.scoring import default_autocast, resolve_device, sample_continuations
from engine.formatting import terminal_console
from engine.runs.eval_progress import ProgressFile

TARGET_NAME = "this run"

SAMPLE_PROMPTS = (
    "The history of the city begins",
    "In mathematics, a prime number is",
    "The experiment showed that",
    "Once upon a time, in a small village,",
    "To bake bread at home, you need",
)
SAMPLE_TOKENS = 48
SAMPLE_SEED = 1337
# why a held-out evaluation has no GPT-2 or CodeLion rows, and what would give them
WIKITEXT_NEEDS = ("GPT-2 (124M) and CodeLion 70M compare on WikiText-2 with the GPT-2 tokenizer: train on a mix "
                  "with tokenizer = \"gpt2\" (challenge-1b), whose files come from the Hugging Face hub on first "
                  "use or from SPARKNET_TOKENIZER=DIR, then evaluate with WikiText-2 from the hub or --wikitext DIR")


def published_row(baseline: Baseline, protocol: str, target_is_gpt2_tokenized: bool, reason: str = "") -> dict:
    fig = PUBLISHED[(baseline.key, protocol)]
    note = fig.note + (f"; not measured: {reason}" if reason else "")
    return {
        "model": baseline.name,
        "hf_id": baseline.hf_id,
        "source": "published",
        "protocol": fig.protocol,
        "loss": fig.loss,
        "perplexity": fig.perplexity,
        "tokens_scored": None,
        "bits_per_byte": None,
        "tokenizer": PUBLISHED_TOKENIZER,
        "tokenizer_matches": target_is_gpt2_tokenized,
        "note": note,
    }


def compute_deltas(target: dict, others: list[dict]) -> list[dict]:
    """This model against each baseline; loss and perplexity only where the tokenizers agree."""
    deltas = []
    for b in others:
        d = {"against": b["model"], "source": b["source"], "loss_delta": None, "perplexity_ratio": None,
             "bits_per_byte_delta": None, "comparable": "no", "note": ""}
        if target["bits_per_byte"] is not None and b["bits_per_byte"] is not None:
            d["bits_per_byte_delta"] = target["bits_per_byte"] - b["bits_per_byte"]
        if b["tokenizer_matches"]:
            if b["loss"] is not None and target["loss"] is not None:
                d["loss_delta"] = target["loss"] - b["loss"]
            if b["perplexity"] is not None and target["perplexity"] is not None:
                d["perplexity_ratio"] = target["perplexity"] / b["perplexity"]
        has_number = any(d[k] is not None for k in ("loss_delta", "perplexity_ratio", "bits_per_byte_delta"))
        if not has_number:
            d["note"] = "no figure to compare" if b["tokenizer_matches"] else \
                "tokenizers differ and no bits per byte was published"
        elif not b["tokenizer_matches"]:
            d["comparable"] = "bits per byte only"
            d["note"] = "tokenizers differ: per-token loss and perplexity do not compare"
        elif b["source"] == "measured":
            d["comparable"] = "yes"
        elif b["protocol"] == target["protocol"] and not target.get("deviation"):
            d["comparable"] = "yes"
            d["note"] = "against a published figure"
        else:
            d["comparable"] = "approximate"
            why = target.get("deviation") or f"published protocol: {b['protocol']}"
            d["note"] = f"against a published figure; {why}"
        deltas.append(d)
    return deltas


# ------------------------------------------------------------------ the command


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=False)


def _check_options(protocol: str | None, stride: int | None, temperature: float, top_k: int,
                   max_tokens: int | None, limit: int | None) -> None:
    if protocol is not None and protocol not in PROTOCOLS:
        raise SparkNetError(f"--protocol {protocol}: use {', '.join(PROTOCOLS)}")
    if stride is not None and stride < 1:
        raise SparkNetError(f"--stride {stride}: must be a positive number of tokens")
    if temperature < 0:
        raise SparkNetError(f"--temperature {temperature}: must be 0 (greedy) or more")
    if top_k < 0:
        raise SparkNetError(f"--top-k {top_k}: must be 0 (no limit) or more")
    if max_tokens is not None and max_tokens < 1:
        raise SparkNetError(f"--max-tokens {max_tokens}: must be a positive number of tokens")
    if limit is not None and limit < 1:
        raise SparkNetError(f"--limit {limit}: must be a positive number of examples per task")


def eval_command(target: str, protocol: str | None = None, stride: int | None = None,
                 wikitext: str | None = None, baselines: bool = False, baseline_dirs: dict[str, str] = {},
                 device: str = "auto", samples: bool = True, temperature: float = 0.8, top_k: int = 50,
                 max_tokens: int | None = None, wait_for_lock: bool = False, tasks: list[str] | None = None,
                 task_path: str | None = None, limit: int | None = None) -> int:
    """Evaluate, print the tables, write eval.json; 0 when done, 1 when the model's loss is not a number.

    tasks: lm-evaluation-harness tasks instead of perplexity (engine/evaluate/tasks.py; task_path adds a
    folder of task YAML files, limit caps the examples per task); both kinds of result share eval.json.

    protocol None runs both WikiText protocols for a GPT-2-tokenized model
    (or a model folder), and the held-out protocol for a run with another
    tokenizer (see protocols_for). The standard protocol's stride is capped at each model's context; None
    means half of each model's context, at most 512.

    Baselines are measured live when `baselines` is set or a folder is named
    for them; otherwise, or when their weights do not load, their published
    figures are shown, labelled as such.

    One evaluation at a time per run (a second is refused, or waits with
    wait_for_lock). A run's final model writes eval.json; a checkpoint of an
    unfinished run writes eval-step-N.json beside it and never replaces it.
    """
    from engine.runs.lock import EVAL_LOCK_NAME, RunLock
    from engine.runs.rundir import resolve_run

    _check_options(protocol, stride, temperature, top_k, max_tokens, limit)
    run_dir = None
    try:
        run_dir = resolve_run(target)
    except SparkNetError:
        pass  # a model folder, not a run
    dirs = {baseline_for(name).key: path for name, path in baseline_dirs.items()}
    lock = RunLock.acquire(run_dir, what="evaluation", name=EVAL_LOCK_NAME, wait=wait_for_lock) if run_dir else None
    progress = ProgressFile(run_dir)
    try:
        if tasks:
            return _evaluate_benchmarks(target, tasks, task_path, limit, device, progress, baselines, dirs)
        return _evaluate(target, protocol, stride, wikitext, baselines, dirs, device, samples, temperature,
                         top_k, max_tokens, progress)
    finally:
        progress.close()
        if lock is not None:
            lock.release()


def _evaluate(target, protocol, stride, wikitext, baselines, dirs, device, samples, temperature, top_k,
              max_tokens, progress: ProgressFile) -> int:
    """dirs: baseline key -> local folder."""
    from engine.files import utc_now

    dev = resolve_device(device)
    amp = default_autocast(dev)
    loaded = load_target(target)
    check_results_folder(loaded)
    gpt2_tokenized = is_gpt2_tokenizer(loaded.tokenizer)
    # every protocol's text is found before the first token is scored
    runners = [make_protocol(name, loaded, stride, wikitext, max_tokens)
               for name in protocols_for(protocol, loaded, gpt2_tokenized)]
    loaded.model.to(dev)
    sections = [_section(runner, _score_all(runner, loaded, baselines, dirs, dev, amp, gpt2_tokenized, progress))
                for runner, _ in runners]
    sampled = []
    if samples:
        progress.stage("sample continuations", None, "")
        sampled = sample_continuations(loaded.model, loaded.tokenizer, SAMPLE_PROMPTS, dev,
                                       max_new_tokens=SAMPLE_TOKENS, temperature=temperature, top_k=top_k,
                                       seed=SAMPLE_SEED, autocast_dtype=amp)
    doc = {
        "created_at": utc_now(),
        "target": loaded.path,
        "checkpoint_step": loaded.checkpoint_step,
        "final": loaded.final,
        "evaluations": sections,
        "samples": sampled,
        "settings": {
            "device": str(dev),
            "precision": "bf16 autocast" if amp is torch.bfloat16 else "fp32",
            "wikitext": next((origin for _, origin in runners if origin), None),
            "baselines_live": bool(baselines),
            "baseline_dirs": dirs,
            "sampling": {"temperature": temperature, "top_k": top_k, "max_new_tokens": SAMPLE_TOKENS,
                         "seed": SAMPLE_SEED},
            "engine_version": __version__,
        },
    }
    out = _write_eval(dict(doc), loaded)  # the file keeps earlier sections; the report shows this evaluation's
    print_report(doc, terminal_console(), out)
    return 0 if all(section["results"][0]["loss"] is not None for section in sections) else 1


def _evaluate_benchmarks(target: str, tasks: list[str], task_path: str | None, limit: int | None,
                         device: str, progress: ProgressFile, baselines: bool, dirs: dict) -> int:
    """The harness on the model's Hugging Face folder (a checkpoint is exported to a temporary one first)."""
    import tempfile

    from engine.evaluate.tasks import measure_baselines, run_benchmarks, task_index
    from engine.files import utc_now
    from engine.models.export_hf import export_hf

    dev = resolve_device(device)
    loaded = load_target(target)
    check_results_folder(loaded)
    index = task_index(tasks, task_path, progress)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(loaded.path)
        if not (folder / "config.json").exists():
            folder = export_hf(loaded.model, Path(staging), loaded.tokenizer)
        benchmarks = run_benchmarks(folder, tasks, str(dev), index, limit, progress)
    benchmarks["baselines"] = measure_baselines(tasks, str(dev), index, limit, baselines, dirs, progress)
    doc = {"created_at": utc_now(), "target": loaded.path, "checkpoint_step": loaded.checkpoint_step,
           "final": loaded.final, "evaluations": [], "benchmarks": benchmarks, "samples": [],
           "settings": {"device": str(dev), "engine_version": __version__}}
    out = _write_eval(dict(doc), loaded)
    print_report(doc, terminal_console(), out)
    return 0


def _section(runner, results: list[dict]) -> dict:
    """One protocol's part of eval.json: its settings, every model's row, this model's deltas."""
    section = {"protocol": runner.settings(), "results": results,
               "deltas": compute_deltas(results[0], results[1:]), "note": None}
    if runner.name == "held-out":
        section["note"] = WIKITEXT_NEEDS
    return section


def _score_all(runner, loaded: LoadedModel, baselines: bool, dirs: dict, dev, amp,
               gpt2_tokenized: bool, progress_file: ProgressFile) -> list[dict]:
    """This model's row, then each baseline's: measured live when asked for and its weights load, else published.

    The held-out protocol has no baseline rows: nothing is published on a
    run's own text."""
    from rich.console import Console

    protocol = runner.name
    results = []
    with _progress() as progress:
        def start_task(name: str, total: int) -> Advance:
            task = progress.add_task(name, total=total)
            advance_file = progress_file.stage(f"{protocol}: {name}", total, "tokens")

            def advance(n: int) -> None:
                progress.advance(task, n)
                advance_file(n)

            return advance

        results.append(runner.measure(TARGET_NAME, loaded, dev, amp, start_task))
        results[0]["tokenizer_matches"] = True
        for b in BASELINES if protocol in WIKITEXT_PROTOCOLS else ():
            if not (baselines or b.key in dirs):
                results.append(published_row(b, protocol, gpt2_tokenized))
                continue
            try:
                base = load_baseline(b, dirs.get(b.key))
            except BaselineUnavailable as e:
                Console(stderr=True).print(f"{b.name}: {e}; showing its published figures", markup=False,
                                           highlight=False, soft_wrap=True)
                results.append(published_row(b, protocol, gpt2_tokenized, reason=str(e)))
                continue
            base.model.to(dev)
            row = runner.measure(b.name, base, dev, amp, start_task)
            row["hf_id"] = b.hf_id
            row["tokenizer_matches"] = base.tokenizer.fingerprint == loaded.tokenizer.fingerprint
            results.append(row)
            del base
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return results


def check_results_folder(loaded: LoadedModel) -> None:
    """Refuse before scoring when eval.json could not be written where it goes: the scores take minutes."""
    folder = Path(loaded.out_dir or loaded.path)
    writable_folder(folder, str(folder), "copy the model folder somewhere you can write, and evaluate the copy")


def _write_eval(doc: dict, loaded: LoadedModel) -> Path:
    """eval.json for a final model, eval-step-N.json for an earlier checkpoint (never over the final one), and
    eval-capped.json for an evaluation capped (--max-tokens) below one eval.json already holds (never in its place).

    An earlier evaluation of the same weights under another protocol is kept
    in the file beside the new one."""
    from engine.files import read_json, write_json_atomic

    out_dir = Path(loaded.out_dir or loaded.path)
    name = f"eval-step-{loaded.checkpoint_step:08d}.json" if loaded.final is False else "eval.json"
    out = out_dir / name
    before = read_json(out) or {}
    if before.get("checkpoint_step") == doc["checkpoint_step"] and _smaller_than_kept(doc, before):
        out = out_dir / "eval-capped.json"
        before = read_json(out) or {}
    if before.get("checkpoint_step") == doc["checkpoint_step"] and isinstance(before.get("evaluations"), list):
        new = {s["protocol"]["name"] for s in doc["evaluations"]}
        kept = [s for s in before["evaluations"] if isinstance(s, dict)
                and (s.get("protocol") or {}).get("name") not in new]
        order = {name: i for i, name in enumerate(PROTOCOLS)}
        doc["evaluations"] = sorted(doc["evaluations"] + kept,
                                    key=lambda s: order.get((s.get("protocol") or {}).get("name"), len(order)))
        if "benchmarks" not in doc and isinstance(before.get("benchmarks"), dict):
            doc["benchmarks"] = before["benchmarks"]
        if not doc["samples"]:
            doc["samples"] = before.get("samples") or []
    write_json_atomic(out, doc)
    return out


def _smaller_than_kept(doc: dict, before: dict) -> bool:
    """Whether a protocol of the new evaluation was capped at fewer tokens than the same protocol in the file."""
    def caps(d: dict) -> dict:
        return {(s.get("protocol") or {}).get("name"): (s.get("protocol") or {}).get("max_tokens")
                for s in d.get("evaluations") or [] if isinstance(s, dict)}

    kept = caps(before)
    return any(name in kept and cap is not None and (kept[name] is None or cap < kept[name])
               for name, cap in caps(doc).items())


