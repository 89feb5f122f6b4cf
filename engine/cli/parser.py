"""The `sparknet` command's arguments: one parser, a sub-parser a verb."""

from __future__ import annotations

import argparse

from engine import __version__
from engine.config.loading import RECOMMENDED_PROFILE

# engine.evaluate.PROTOCOLS, spelled here so that `sparknet --help` does not import torch (a test holds them equal)
EVAL_PROTOCOLS = ("standard", "sparknet-2000", "held-out")


PROFILE_HELP = "a profile in profiles/ by name (e.g. tiny-cpu) or a .toml file"


SET_HELP = "change one profile key for this run, e.g. run.tokens=2_000_000 (repeatable)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sparknet", description="Pretrain a GPT-2-style model and watch it learn. With no verb, `sparknet` "
        "opens the control panel (`sparknet --run RUN` opens a run on its Live screen, `--logs DIR` reads runs "
        "from another folder).")
    ap.add_argument("--version", action="version", version=f"sparknet {__version__}")
    sub = ap.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("prepare", help="tokenize and cache a mix's sources")
    p.add_argument("--mix", required=True)
    p.add_argument("--tokens", type=int, default=None, help="training tokens to prepare (default: see docs)")

    _add_train(sub)
    sub.add_parser("runs", help="every run, newest first: state, progress, loss, speed, age")

    p = sub.add_parser("stop", help="checkpoint, then stop a run")
    p.add_argument("run")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the checkpoint (0: do not wait)")

    p = sub.add_parser("resume", help="continue a run from its newest good checkpoint")
    p.add_argument("run")
    p.add_argument("--detach", action="store_true", help="return at once; the run lives on")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change an optimizer, schedule, interval or thermal key from here on (recorded in run.toml)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train again from step 0 when no checkpoint of the run is usable (refused otherwise)")

    _add_eval(sub)
    _add_bench(sub)
    _add_doctor(sub)

    _add_export(sub)
    _add_sweep(sub)

    p = sub.add_parser("_run")  # the training process itself; no help, so it is not listed
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--from-scratch", action="store_true")
    p.add_argument("--log-to-file", action="store_true")
    return ap


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="WikiText-2 evaluation against the baselines")
    p.add_argument("target", help="run id, run directory or model folder")
    p.add_argument("--protocol", choices=EVAL_PROTOCOLS, default=None,
                   help="one protocol (default: standard and sparknet-2000 for a GPT-2-tokenized model, held-out "
                        "for a run with its own tokenizer, such as the demo's)")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: half the context, at most 512)")
    p.add_argument("--wikitext", default=None, help="folder with wiki.test.raw and wiki.valid.raw")
    p.add_argument("--baselines", action="store_true", help="evaluate GPT-2 and CodeLion 70M live when they load")
    p.add_argument("--baseline-dir", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-samples", action="store_true")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens")
    p.add_argument("--tasks", default=None, metavar="T,...|card",
                   help="downstream benchmarks through lm-evaluation-harness instead of perplexity, e.g. "
                        "hellaswag,piqa; card = the codelion/gpt-2-70m card's six")
    p.add_argument("--task-path", default=None, metavar="DIR", help="a folder of lm-eval task YAML files of your own")
    p.add_argument("--limit", type=int, default=None, help="with --tasks: at most this many examples per task")


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine before a long run: torch build, GPU, fast paths, ceiling")
    p.add_argument("--profile", default=RECOMMENDED_PROFILE, help=PROFILE_HELP + " whose fast paths to prove "
                   f"(default {RECOMMENDED_PROFILE})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure training throughput")
    p.add_argument("--profile", required=True, help=PROFILE_HELP)
    p.add_argument("--mix", default=None, help="overrides the profile's mix")
    p.add_argument("--steps", type=int, default=50, help="training steps to time (default 50)")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="first steps left out of the figures, compilation included (default: a third of --steps, at most 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one profile key, e.g. batch.micro_batch=60 (repeatable); the bench's length is "
                        "--steps, except with --to-quality, which trains for run.tokens")
    p.add_argument("--baseline", choices=["hf-trainer"], default=None,
                   help="also time Hugging Face's Trainer on the same model, data and batch")
    p.add_argument("--baseline-micro-batch", type=int, default=None, metavar="N",
                   help="the Trainer's micro-batch (default: the largest divisor of the step's sequences up to 24)")
    p.add_argument("--eval", action="store_true", help="also report validation loss and WikiText-2 perplexity")
    p.add_argument("--json-out", default=None, metavar="FILE", help="write the figures as JSON to FILE too")
    p.add_argument("--to-quality", action="store_true",
                   help="instead of throughput: train --against's profile, then --profile, for run.tokens each, and "
                        "report the training seconds at which each first reaches the loss the first one ends on")
    p.add_argument("--against", default="codelion-70m", metavar="PROFILE",
                   help="the reference of --to-quality (default codelion-70m)")
    p.add_argument("--eval-points", type=int, default=20, metavar="N",
                   help="held-out loss measurements over each --to-quality run (default 20)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="start a training run")
    p.add_argument("--profile", default=RECOMMENDED_PROFILE,
                   help=PROFILE_HELP + f" (default {RECOMMENDED_PROFILE}, the recommended recipe; codelion-70m is "
                   "the published one)")
    p.add_argument("--mix", default=None, help="overrides the profile's mix")
    p.add_argument("--name", default=None, help="a name for the run id")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=SET_HELP)
    p.add_argument("--detach", action="store_true", help="print the run id and return; the run lives on")
    p.add_argument("--check", action="store_true",
                   help="check the profile, mix, sources and tokenizer, then exit without starting")
    p.add_argument("--nproc-per-node", type=int, default=None, help="processes (GPUs) on this node")
    p.add_argument("--nnodes", type=int, default=None, help="machines taking part (two linked DGX Sparks: 2)")
    p.add_argument("--node-rank", type=int, default=None, help="this machine's place among them, from 0")
    p.add_argument("--master-addr", default=None, help="address of the machine with node rank 0")
    p.add_argument("--master-port", type=int, default=None, help="a free port on that machine")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's model in Hugging Face format, or as a GGUF file")
    p.add_argument("run")
    p.add_argument("dir")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf",
                   help="hf: config.json + model.safetensors for transformers (default); gguf: one file for "
                        "llama.cpp and Ollama, tokenizer inside")
    p.add_argument("--gguf-type", choices=["f16", "bf16", "q8_0"], default="f16",
                   help="the GGUF file's matrices: f16 (default), bf16 or q8_0 (8-bit, half the size)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export in DIR: only the files an export writes, never others")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="short proxy runs of several variants, ranked in one table",
                       description="sparknet sweep SPEC.toml runs its variants one after another; "
                       "sparknet sweep resume|show|stop NAME carries a sweep on, prints its table or stops it")
    p.add_argument("target", nargs="+", metavar="SPEC.toml | resume|show|stop|save NAME")
    p.add_argument("--parallel", type=int, default=1, help="runs at once on the one device (their speeds are then "
                   "not a run's alone; the table says so)")
    p.add_argument("--detach", action="store_true", help="return at once; the sweep lives on (output in sweep.log)")
    p.add_argument("--as", dest="save_as", default=None, metavar="PROFILE", help="with save: the new profile's name")
    p.add_argument("--variant", default=None, help="with save: this variant instead of the best-ranked one")

    p = sub.add_parser("lr-find", help="an LR range test: the rate rises until the loss runs away; a suggested rate")
    p.add_argument("--profile", default=None, help=PROFILE_HELP)
    p.add_argument("--from-run", default=None, metavar="RUN",
                   help="with --save-as: save the suggestion of a range test already run, instead of running one")
    p.add_argument("--mix", default=None)
    p.add_argument("--steps", type=int, default=300, help="steps of the test (default 300)")
    p.add_argument("--group", choices=("adamw", "muon"), default=None,
                   help="test one optimizer group only (default: every group the profile has, each with the other "
                        "held)")
    p.add_argument("--save-as", default=None, metavar="PROFILE",
                   help="save the profile with the suggested rates as a new profile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one profile key, e.g. batch.micro_batch=16 (repeatable); the test keeps its own "
                        "schedule, length, logging and evaluation")
