"""The New run form's logic: edited fields -> validated profile and mix, derived figures, saving.

Validation is the engine's own (engine.config), fed the same `key=value`
overrides that Start passes to `sparknet train --set`, so what the form
accepts is exactly what the engine accepts.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.ceilings import projected_from_saved
from engine.config.loading import (
    ConfigError,
    MixConfig,
    Profile,
    apply_overrides,
    dump_toml,
    flops_per_token,
    mix_from_dict,
    mixes_dir,
    model_parameter_count,
    parse_override,
    profile_from_dict,
    read_toml,
    resolve_mix_path,
    resolve_profile_path,
)
from engine.config.saving import check_new_name, write_new_profile
from engine.files import write_text_atomic
from sparknet_tui.scan import RunRow, measured_throughput

# The hyperparameters the form edits: (dotted key, label).
MAIN_FIELDS: list[tuple[str, str]] = [
    ("model.n_layer", "layers"),
    ("model.n_embd", "width"),
    ("model.n_head", "heads"),
    ("model.context", "context"),
    ("batch.micro_batch", "micro batch"),
    ("batch.grad_accum", "grad accum"),
    ("run.tokens", "tokens"),
    ("optim.lr", "learning rate"),
    ("optim.min_lr", "min lr"),
    ("schedule.warmup", "warmup"),
    ("run.eval_every", "eval every"),
    ("thermal.warn_c", "warn at °C"),
]



def field_text(value: Any) -> str:
    """How a value appears in the form: big integers with _ separators, floats as Python writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def profile_value(profile: Profile, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(profile, section), name)


@dataclass
class ProfileSource:
    """A saved profile as loaded, before any edit."""

    name: str
    path: Path
    data: dict  # the file's own TOML, written back (with edits) by save_profile
    profile: Profile

    def field_defaults(self) -> dict[str, str]:
        return {key: field_text(profile_value(self.profile, key)) for key, _ in MAIN_FIELDS}


@dataclass
class MixSource:
    """A saved mix as loaded, before any edit."""

    name: str
    path: Path
    data: dict
    mix: MixConfig

    def weight_defaults(self) -> dict[str, str]:
        return {s.name: field_text(s.weight) for s in self.mix.sources}


def load_profile_source(name: str) -> ProfileSource:
    """Load and validate a saved profile. Raises ConfigError."""
    path = resolve_profile_path(name)
    data = read_toml(path)
    profile = profile_from_dict(copy.deepcopy(data), str(path), name=path.stem)
    return ProfileSource(path.stem, path, data, profile)


def load_mix_source(name: str) -> MixSource:
    """Load and validate a saved mix. Raises ConfigError."""
    path = resolve_mix_path(name)
    data = read_toml(path)
    mix = mix_from_dict(copy.deepcopy(data), str(path), path.resolve().parent, name=path.stem)
    return MixSource(path.stem, path, data, mix)


@dataclass
class Plan:
    """The form's state after validation, and the figures shown before starting."""

    overrides: list[str] = field(default_factory=list)  # the edited fields as `key=value`
    weights_changed: bool = False
    error: str | None = None  # one line; None when the form is valid
    error_field: str | None = None  # the dotted key or "weight:<source>" the error is about
    profile: Profile | None = None
    mix: MixConfig | None = None
    profile_data: dict = field(default_factory=dict)
    mix_data: dict = field(default_factory=dict)
    parameters: int | None = None
    flops_per_token: int | None = None
    tokens_per_step: int | None = None
    steps: int | None = None
    per_source: list[tuple[str, float, int]] = field(default_factory=list)  # name, share, tokens
    throughput: float | None = None
    throughput_runs: int = 0
    projected_on: str | None = None  # the device whose measured ceilings gave `throughput`, when no run did
    duration_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def total_tokens(self) -> int:
        """What the run trains on: whole steps, so a little more than run.tokens when it does not divide."""
        return (self.steps or 0) * (self.tokens_per_step or 0)


def make_plan(source: ProfileSource, mix_source: MixSource, fields: dict[str, str], weights: dict[str, str],
              runs: list[RunRow], ceilings: dict | None = None) -> Plan:
    """The run the form describes; `runs` and `ceilings` (the figures `sparknet doctor` saved) are read by the
    caller, off the UI thread, and give the time estimate."""
    plan = Plan()
    if _apply_fields(plan, source, fields) or _apply_weights(plan, mix_source, weights):
        return plan
    _estimate(plan, runs, ceilings)
    return plan


def _apply_fields(plan: Plan, source: ProfileSource, fields: dict[str, str]) -> bool:
    """Changed values become overrides, validated together exactly as `--set` would be; True when one fails."""
    for key, _ in MAIN_FIELDS:
        text = fields.get(key, "").strip()
        if not text:
            return _failed(plan, key, f"{key} is empty; type a value")
        _, value = parse_override(f"{key}={text}")
        if value != profile_value(source.profile, key) or type(value) is not type(profile_value(source.profile, key)):
            plan.overrides.append(f"{key}={text}")
    where = f"profile {source.name}" + (" (edited)" if plan.overrides else "")
    try:
        plan.profile_data = apply_overrides(copy.deepcopy(source.data), plan.overrides)
        plan.profile = profile_from_dict(copy.deepcopy(plan.profile_data), where, name=source.name)
    except ConfigError as e:
        return _failed(plan, _field_named_in(str(e)), str(e))
    return False


def _apply_weights(plan: Plan, mix_source: MixSource, weights: dict[str, str]) -> bool:
    """The mix with the form's weights, validated as a mix file is; True when it fails."""
    plan.mix_data = copy.deepcopy(mix_source.data)
    for table in plan.mix_data.get("sources", []):
        name = table.get("name")
        if name not in weights:
            continue
        text = weights[name].strip()
        try:
            weight = float(text.replace("_", ""))
        except ValueError:
            return _failed(plan, f"weight:{name}",
                           f"mix {mix_source.name}: weight of '{name}' must be a number > 0, got {text!r}")
        if weight != table.get("weight"):
            plan.weights_changed = True
        table["weight"] = weight
    where = f"mix {mix_source.name}" + (" (edited)" if plan.weights_changed else "")
    try:
        plan.mix = mix_from_dict(copy.deepcopy(plan.mix_data), where, mix_source.path.resolve().parent,
                                 name=mix_source.name)
    except ConfigError as e:
        bad = next((f"weight:{n}" for n in weights if f"sources.{n}.weight" in str(e)), None)
        return _failed(plan, bad, str(e))
    return False


def _estimate(plan: Plan, runs: list[RunRow], ceilings: dict | None) -> None:
    """Size, cost and duration: measured on this machine's finished runs of the same shape, else projected."""
    profile = plan.profile
    plan.parameters = model_parameter_count(profile.model)
    plan.flops_per_token = flops_per_token(profile.model)
    plan.tokens_per_step = profile.tokens_per_step
    plan.steps = profile.steps
    total = profile.steps * profile.tokens_per_step
    plan.per_source = [(name, share, round(share * total)) for name, share in plan.mix.shares.items()]
    shape = (profile.model.arch, profile.model.n_layer, profile.model.n_embd, profile.model.n_head,
             profile.model.context, profile.model.vocab_size)
    plan.throughput, plan.throughput_runs = measured_throughput(runs, shape)
    if not plan.throughput and (projected := projected_from_saved(plan.flops_per_token, ceilings or {})):
        plan.throughput, plan.projected_on = projected
    if plan.throughput:
        plan.duration_s = total / plan.throughput


def _failed(plan: Plan, field_key: str | None, message: str) -> bool:
    plan.error, plan.error_field = message, field_key
    return True


def _field_named_in(message: str) -> str | None:
    """The form field an engine message is about: the first field key it names after the file name."""
    after = message.split(": ", 1)[-1]
    found = [(m.start(), key) for key, _ in MAIN_FIELDS if (m := re.search(rf"\b{re.escape(key)}\b", after))]
    return min(found)[1] if found else None


# ---------------------------------------------------------------- saving


def save_profile(plan: Plan, name: str, mix_name: str) -> Path:
    """Write the edited profile as profiles/<name>.toml (never over an existing one). Raises ConfigError."""
    if not plan.ok or plan.profile is None:
        raise ConfigError(f"cannot save: {plan.error}")
    data = copy.deepcopy(plan.profile_data)
    data["mix"] = mix_name
    return write_new_profile(data, name)


def save_mix(plan: Plan, name: str, source_mix_path: Path) -> Path:
    """Write the edited mix as profiles/mixes/<name>.toml. Raises ConfigError."""
    if not plan.ok or plan.mix is None:
        raise ConfigError(f"cannot save: {plan.error}")
    path = check_new_name(name, mixes_dir(), "mix")
    data = copy.deepcopy(plan.mix_data)
    # relative source paths were written relative to the original mix's folder
    base = source_mix_path.resolve().parent
    if base != path.parent.resolve():
        for table in data.get("sources", []):
            p = table.get("path")
            if isinstance(p, str) and p and not os.path.isabs(os.path.expanduser(p)) and not p.startswith("$"):
                table["path"] = str((base / p).resolve())
    mix_from_dict(copy.deepcopy(data), str(path), path.parent, name=path.stem)
    try:
        write_text_atomic(path, dump_toml(data))  # a failure leaves nothing half-written
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from None
    return path
