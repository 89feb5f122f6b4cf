"""`sparknet export` and `sparknet eval`: a run's model taken elsewhere, and scored."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from engine import SparkNetError
from engine.config.paths import nearest_existing, writable_folder
from engine.runs.rundir import resolve_run


def export_target(out: Path, fmt: str, gguf_name: str, force: bool) -> Path:
    """Where the export goes, refused before anything is loaded or written when it would replace what is there:
    a Hugging Face export needs an empty or new folder, a GGUF export a file name not yet taken (--force allows
    both, and then replaces only the files an export writes)."""
    if out.exists() and not out.is_dir():
        raise SparkNetError(f"{out} is a file; give a folder to export into")
    existing = nearest_existing(out)
    if not existing.is_dir():
        raise SparkNetError(f"{out} lies under {existing}, which is a file; give a folder to export into")
    writable_folder(out, f"export folder {out}", "give a folder you can write")
    if fmt == "gguf":
        target = out / gguf_name
        if target.exists() and not force:
            raise SparkNetError(f"{target} exists; give another folder, or --force to replace it")
        return target
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise SparkNetError(f"{out} is not empty ({shown}); give a new or empty folder, or --force to replace the "
                            "files of an earlier export (others are left alone)")
    return out


def cmd_export(args) -> int:
    from engine.data.tokenizer import load_tokenizer
    from engine.models.checkpoint import load_latest_model
    from engine.models.export_hf import export_hf

    run_dir = resolve_run(args.run)
    out = Path(args.dir).expanduser()
    target = export_target(out, args.format, f"{run_dir.name}-{args.gguf_type}.gguf", args.force)
    model, tok_spec, _ = load_latest_model(run_dir, report=print)
    tokenizer = load_tokenizer(tok_spec)
    out.mkdir(parents=True, exist_ok=True)
    # written beside the target and moved in whole: a failure leaves the folder as it was
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as staging:
        export_hf(model, Path(staging), tokenizer)
        if args.format == "gguf":
            from engine.models.export_gguf import export_gguf

            path = export_gguf(Path(staging), target, tokenizer, args.gguf_type)
            print(f"wrote {path} (llama-cli -m {path.name}; for Ollama a Modelfile with `FROM ./{path.name}`)")
            return 0
        for written in sorted(Path(staging).iterdir()):
            os.replace(written, out / written.name)
    print(f"wrote {out} (load with transformers.AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_eval(args) -> int:
    from engine.evaluate import eval_command

    dirs = {}
    for item in args.baseline_dir:
        if "=" not in item:
            raise SparkNetError(f"--baseline-dir {item}: expected NAME=DIR, for example gpt2=~/models/gpt2")
        k, v = item.split("=", 1)
        dirs[k.strip()] = os.path.expanduser(v.strip())
    tasks = None
    if args.tasks is not None:
        from engine.evaluate.tasks import parse_tasks

        tasks = parse_tasks(args.tasks)
    from engine.train.interrupt import Interrupted, interruptible

    try:
        # Ctrl-C or SIGTERM (the panel's stop) ends it at once: eval.json is written only at the end
        with interruptible(lambda: False):
            return eval_command(args.target, protocol=args.protocol, stride=args.stride, wikitext=args.wikitext,
                                baselines=args.baselines, baseline_dirs=dirs, device=args.device,
                                samples=not args.no_samples, temperature=args.temperature, top_k=args.top_k,
                                max_tokens=args.max_tokens, tasks=tasks, task_path=args.task_path,
                                limit=args.limit)
    except Interrupted:
        print("sparknet eval: stopped before the end; eval.json is as it was", file=sys.stderr)
        return 130
