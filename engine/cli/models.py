"""`sparknet export` and `sparknet eval`: a run's model taken elsewhere, and scored."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine import SparkNetError
from engine.runs.rundir import resolve_run


def cmd_export(args) -> int:
    from engine.data.tokenizer import load_tokenizer
    from engine.models.checkpoint import load_latest_model
    from engine.models.export_hf import export_hf

    run_dir = resolve_run(args.run)
    model, tok_spec, _ = load_latest_model(run_dir, report=print)
    out, tokenizer = Path(args.dir).expanduser(), load_tokenizer(tok_spec)
    if args.format == "hf":
        export_hf(model, out, tokenizer)
        print(f"wrote {out} (load with transformers.AutoModelForCausalLM.from_pretrained)")
        return 0
    import tempfile

    from engine.models.export_gguf import export_gguf

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as staging:
        export_hf(model, Path(staging), tokenizer)
        path = export_gguf(Path(staging), out / f"{run_dir.name}-{args.gguf_type}.gguf", tokenizer, args.gguf_type)
    print(f"wrote {path} (llama-cli -m {path.name}; for Ollama a Modelfile with `FROM ./{path.name}`)")
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
