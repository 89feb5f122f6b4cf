"""What gets evaluated: a run, a model folder, or a baseline from a local folder, the Hugging Face cache or the hub."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import SparkNetError, one_line
from engine.data.hub import hub_offline, hub_reachable

# Text whose GPT-2 ids tell the GPT-2 tokenizer apart from others (spaces,
# numbers, WikiText's "@-@", accents, a non-Latin script).
PROBE_TEXT = " = Robert Boulter = \n The 2006 café season @-@ naïve, 12.5 % — Ōsaka!"
GPT2_PROBE_IDS = [796, 5199, 347, 2852, 353, 796, 220, 198, 383, 4793, 40304, 1622, 2488, 12, 31, 41492, 11,
                  1105, 13, 20, 4064, 851, 25370, 234, 82, 8130, 0]
GPT2_VOCAB = 50257

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def is_gpt2_tokenizer(tokenizer) -> bool:
    return tokenizer.n_vocab == GPT2_VOCAB and tokenizer.encode(PROBE_TEXT) == GPT2_PROBE_IDS


def tokenizer_from_spec(spec: str):
    from engine.data.tokenizer import load_tokenizer

    return load_tokenizer(spec)


def _hf_model(name_or_path: str, local_files_only: bool = False) -> torch.nn.Module:
    import transformers
    from transformers import AutoModelForCausalLM

    # full precision weights; bf16 comes from autocast on the GPU, as in training
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=local_files_only,
                                                     **{dtype_key: torch.float32})
    except Exception as e:  # a truncated or foreign weights file, a broken config.json: the folder is at fault
        raise SparkNetError(f"{name_or_path}: the model cannot be loaded from it ({one_line(e, 160)}); export "
                            "the model again or name another folder") from None
    return model.eval()


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    tokenizer_name: str
    path: str  # the folder or hub id the weights came from
    out_dir: Path | None = None  # where eval.json goes
    note: str = ""
    run_dir: Path | None = None  # the run the model belongs to, when it is a run's
    checkpoint_step: int | None = None  # the training step of the weights scored, when known
    final: bool | None = None  # whether they are the run's final model (None: not a run's model)


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).exists() for name in _TOKENIZER_FILES)


def load_model_folder(folder: Path, tokenizer_spec: str | None = None) -> LoadedModel:
    """A SparkNet export (sparknet_model.json) or any Hugging Face causal-LM folder (config.json).

    The tokenizer is tokenizer_spec when given (a run's own), else the
    folder's tokenizer files, else GPT-2's (said so in the note).
    """
    folder = Path(folder)
    if (folder / "sparknet_model.json").exists():
        from engine.models.export_hf import load_engine_model

        model = load_engine_model(folder).eval()
    elif (folder / "config.json").exists():
        try:
            model = _hf_model(str(folder), local_files_only=True)
        except Exception as e:  # transformers raises many kinds; the user needs the folder and the reason
            raise SparkNetError(f"{folder}: not a loadable Hugging Face causal LM ({_first_line(e)})") from None
    else:
        raise SparkNetError(f"{folder}: neither sparknet_model.json nor config.json here; give a run, "
                            "a SparkNet export or a Hugging Face model folder")
    note = ""
    if tokenizer_spec:
        tokenizer, name = tokenizer_from_spec(tokenizer_spec), tokenizer_spec
    elif _has_tokenizer_files(folder):
        from engine.data.tokenizer import load_tokenizer_folder

        tokenizer = load_tokenizer_folder(folder)
        name = "gpt2" if is_gpt2_tokenizer(tokenizer) else str(folder)
    else:
        tokenizer, name = tokenizer_from_spec("gpt2"), "gpt2"
        note = "no tokenizer in the model folder: GPT-2's assumed"
    return LoadedModel(model, tokenizer, name, str(folder), note=note)


def load_target(target: str, report=print) -> LoadedModel:
    """A model folder, or a run (id or path): its final model/ when training has written it, else its newest good
    checkpoint (report(line) says which, and each newer one skipped)."""
    from engine.files import read_json
    from engine.runs.rundir import load_run_config, resolve_run

    p = Path(os.path.expanduser(target))
    if p.is_dir() and ((p / "sparknet_model.json").exists() or (p / "config.json").exists()):
        run_dir = p.parent if (p.parent / "run.toml").exists() else None
        spec = _run_tokenizer(run_dir, load_run_config) if run_dir else None
        loaded = load_model_folder(p, spec)
        loaded.out_dir = run_dir or p
        return loaded
    if p.is_dir() and not (p / "run.toml").exists():
        raise SparkNetError(f"{p}: not a run directory or model folder (no run.toml, sparknet_model.json "
                            "or config.json)")
    run_dir = resolve_run(target)
    spec = _run_tokenizer(run_dir, load_run_config)
    model_dir = run_dir / "model"
    if (model_dir / "sparknet_model.json").exists() or (model_dir / "config.json").exists():
        # model/ is written once, by the end of training: it is the final model
        loaded = load_model_folder(model_dir, spec)
        loaded.checkpoint_step, loaded.final = (read_json(run_dir / "status.json") or {}).get("step"), True
    else:
        from engine.models.checkpoint import load_latest_model

        model, ck_spec, step = load_latest_model(run_dir, report=report)
        spec = spec or ck_spec
        loaded = LoadedModel(model.eval(), tokenizer_from_spec(spec), spec, str(run_dir / "checkpoints"),
                             note=f"checkpoint of step {step}, not the final model")
        loaded.checkpoint_step, loaded.final = step, False
    loaded.out_dir = loaded.run_dir = run_dir
    return loaded


def _run_tokenizer(run_dir: Path, load_run_config) -> str | None:
    mix = load_run_config(run_dir).get("mix")
    return mix.get("tokenizer") if isinstance(mix, dict) else None


# ------------------------------------------------------------------ baselines


@dataclass(frozen=True)
class Baseline:
    key: str  # the NAME of --baseline-dir NAME=DIR
    name: str  # as shown in the table
    hf_id: str


BASELINES = (
    Baseline("gpt2", "GPT-2 (124M)", "openai-community/gpt2"),
    Baseline("codelion", "CodeLion GPT-2 70M", "codelion/gpt-2-70m"),
)


def baseline_for(name: str) -> Baseline:
    """--baseline-dir NAME: the short key, the hub id or the table name, any case."""
    wanted = name.strip().lower()
    for b in BASELINES:
        if wanted in (b.key, b.hf_id.lower(), b.name.lower()):
            return b
    keys = " or ".join(f"{b.key}=DIR" for b in BASELINES)
    raise SparkNetError(f"--baseline-dir {name}: unknown baseline; use {keys}")


class BaselineUnavailable(Exception):
    """Why a baseline's weights could not be loaded (the table then shows its published figures)."""


def load_baseline(baseline: Baseline, local_dir: str | os.PathLike | None = None) -> LoadedModel:
    """From local_dir when given (and only from there), else the Hugging Face cache, else the hub."""
    if local_dir is not None:
        folder = Path(os.path.expandvars(os.path.expanduser(str(local_dir))))
        if not folder.is_dir():
            raise BaselineUnavailable(f"--baseline-dir {baseline.key}={local_dir}: no such folder")
        try:
            return load_model_folder(folder)
        except SparkNetError as e:
            raise BaselineUnavailable(f"--baseline-dir {baseline.key}: {e}") from None
    try:
        return _load_hub_baseline(baseline, local_files_only=True)
    except Exception:
        pass  # not in the cache
    if not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub is not reachable"
        raise BaselineUnavailable(f"{baseline.hf_id} is not in the Hugging Face cache and {why}; "
                                  f"--baseline-dir {baseline.key}=DIR names a local copy")
    try:
        return _load_hub_baseline(baseline, local_files_only=False)
    except Exception as e:
        raise BaselineUnavailable(f"{baseline.hf_id} did not load from the hub ({_first_line(e)})") from None


def _load_hub_baseline(baseline: Baseline, local_files_only: bool) -> LoadedModel:
    model = _hf_model(baseline.hf_id, local_files_only=local_files_only)
    tokenizer = tokenizer_from_spec(baseline.hf_id)  # the Hugging Face cache first, then the hub
    name = "gpt2" if is_gpt2_tokenizer(tokenizer) else baseline.hf_id
    return LoadedModel(model, tokenizer, name, baseline.hf_id)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0]}" if text else e.__class__.__name__
