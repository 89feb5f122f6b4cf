"""Profiles and mixes: TOML files validated into typed dataclasses.

Pure Python (no torch): the control panel imports this module to validate
what the user types. Every mistake raises ConfigError with one line naming
the file, the key and the fix.
"""

from __future__ import annotations

import codecs
import difflib
import math
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from engine.config.errors import ConfigError
from engine.config.model_size import (
    flops_per_token,
    model_parameter_count,
    padded_vocab,
)
from engine.config.schema import (
    MIX_TOP_KEYS,
    PROFILE_SECTIONS,
    PROFILE_TOP_KEYS,
    BatchConfig,
    DistConfig,
    MixConfig,
    ModelConfig,
    OptimConfig,
    Profile,
    RunConfig,
    ScheduleConfig,
    SourceConfig,
    ThermalConfig,
)
from engine.config.validation import validate_profile

# The schema and the model arithmetic live in their own modules; they are named here too, so `engine.config`
# stays the one place to import configuration from.
__all__ = [
    "BatchConfig", "ConfigError", "DistConfig", "MixConfig", "ModelConfig", "OptimConfig", "PROJECT_ROOT",
    "Profile", "RunConfig", "ScheduleConfig", "SourceConfig", "ThermalConfig", "apply_overrides", "dump_toml",
    "expand", "flops_per_token", "list_mixes", "list_profiles", "load_mix", "load_profile", "mix_from_dict",
    "load_run_inputs", "mixes_dir", "model_parameter_count", "padded_vocab",
    "parse_override", "profile_from_dict", "profiles_dir", "read_toml", "resolve_mix_path", "resolve_profile_path",
    "validate_profile",
]


PROJECT_ROOT = Path(__file__).resolve().parents[2]
# the profile to start with: the better recipe (codelion-70m is the published one, for reproducing the challenge)
RECOMMENDED_PROFILE = "modern-70m"


def profiles_dir() -> Path:
    return Path(os.environ.get("SPARKNET_PROFILES", PROJECT_ROOT / "profiles"))


def mixes_dir() -> Path:
    return profiles_dir() / "mixes"


# ---------------------------------------------------------------- loading helpers


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        t, "a list of numbers"
    )


def _check_type(value: Any, t: Any, where: str, key: str) -> Any:
    """Return value converted to t, or raise ConfigError naming where/key."""
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
            return float(value)
    elif t is str:
        if isinstance(value, str):
            return value
    elif get_origin(t) is list:
        if isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return [float(v) for v in value]
    raise ConfigError(f"{where}: {key} must be {_type_name(t)}, got {value!r}")


def _unknown_key(where: str, key: str, known: list[str]) -> ConfigError:
    guess = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f" (did you mean '{guess[0]}'?)" if guess else f" (known keys: {', '.join(sorted(known))})"
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _fill(obj: Any, table: dict, where: str, prefix: str) -> None:
    hints = get_type_hints(type(obj))
    known = [f.name for f in fields(obj)]
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{prefix.rstrip('.')}] must be a table of keys")
    for key, value in table.items():
        if key not in known:
            raise _unknown_key(where, prefix + key, known)
        setattr(obj, key, _check_type(value, hints[key], where, prefix + key))


def read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def _resolve_toml(kind: str, name_or_path: str, folder: Path, names: list[str]) -> Path:
    """A path as given (a .toml file or anything with a folder in it), else NAME.toml in `folder`."""
    p = Path(os.path.expanduser(name_or_path))
    if p.suffix == ".toml" or os.sep in name_or_path or p.exists():
        return p
    candidate = folder / f"{name_or_path}.toml"
    if not candidate.exists():
        raise ConfigError(f"{kind} '{name_or_path}' not found in {folder} (available: {', '.join(names) or 'none'})")
    return candidate


def resolve_profile_path(name_or_path: str) -> Path:
    return _resolve_toml("profile", name_or_path, profiles_dir(), list_profiles())


def resolve_mix_path(name_or_path: str) -> Path:
    return _resolve_toml("mix", name_or_path, mixes_dir(), list_mixes())


def list_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def list_mixes() -> list[str]:
    d = mixes_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


# ---------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=3e-4' -> ('optim.lr', 0.0003). Values are read as TOML, else as strings."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value, for example --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set {text}: missing key before '='")
    try:
        value = tomllib.loads(f"v = {raw.replace('_', '') if re.fullmatch(r'[0-9_]+', raw) else raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


# ---------------------------------------------------------------- profile validation


def profile_from_dict(data: dict, where: str, name: str = "") -> Profile:
    prof = Profile(name=name, source=where)
    for key, value in data.items():
        if key in PROFILE_SECTIONS:
            _fill(getattr(prof, key), value, where, key + ".")
        elif key in PROFILE_TOP_KEYS:
            setattr(prof, key, _check_type(value, PROFILE_TOP_KEYS[key], where, key))
        else:
            raise _unknown_key(where, key, list(PROFILE_SECTIONS) + list(PROFILE_TOP_KEYS))
    validate_profile(prof)
    return prof


def load_profile(name_or_path: str, overrides: list[str] | None = None, settings: list[str] | None = None) -> Profile:
    """The profile with the user's --set overrides, then the command's own `settings` (the bench's length, a range
    test's schedule). Messages name the file and the user's overrides only: the user never typed the settings."""
    path = resolve_profile_path(name_or_path)
    data = read_toml(path)
    where = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        where = f"{path} with --set {' '.join(overrides)}"
    if settings:
        data = apply_overrides(data, settings)
    return profile_from_dict(data, where, name=path.stem)


def load_run_inputs(profile_ref: str, mix_ref: str | None, overrides: list[str],
                    settings: list[str] | None = None) -> tuple[Profile, MixConfig]:
    """The profile (with its overrides and the command's settings, as in load_profile) and the mix a run trains
    on: `mix_ref`, else the profile's own mix."""
    profile = load_profile(profile_ref, overrides, settings)
    mix_name = mix_ref or profile.mix
    if not mix_name:
        raise ConfigError(f"{profile.source}: no mix given; add mix = \"NAME\" to the profile or pass --mix NAME")
    return profile, load_mix(mix_name)


# ---------------------------------------------------------------- mix validation


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(text: str, where: str, key: str) -> str:
    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(f"{where}: {key} uses ${{{m.group(1)}}}, which is not set; set it or write the path")
        return value

    return os.path.expanduser(_VAR.sub(sub, text))


def _check_encoding(encoding: str, where: str, label: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"{where}: {label}.encoding '{encoding}' is not an encoding Python knows; use utf-8, "
                          "latin-1, cp1252 or another of Python's codecs") from None


def mix_from_dict(data: dict, where: str, base_dir: Path, name: str = "") -> MixConfig:
    mix = MixConfig(name=name, source=where)
    raw_sources = None
    for key, value in data.items():
        if key == "sources":
            raw_sources = value
        elif key in MIX_TOP_KEYS:
            setattr(mix, key, _check_type(value, MIX_TOP_KEYS[key], where, key))
        else:
            raise _unknown_key(where, key, list(MIX_TOP_KEYS) + ["sources"])
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ConfigError(f"{where}: needs at least one [[sources]] table with name, weight and hf or path")
    seen = set()
    for i, table in enumerate(raw_sources):
        src = SourceConfig()
        label = f"sources[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {label} must be a table")
        if "name" in table and isinstance(table["name"], str) and table["name"]:
            label = f"sources.{table['name']}"
        _fill(src, table, where, f"{label}.")
        if not src.name:
            raise ConfigError(f"{where}: {label} needs a name")
        if src.name in seen:
            raise ConfigError(f"{where}: two sources are named '{src.name}'; give each a unique name")
        seen.add(src.name)
        if "weight" not in table:
            raise ConfigError(f"{where}: {label} needs a weight (a number > 0)")
        if not src.weight > 0:
            raise ConfigError(f"{where}: {label}.weight must be a number > 0, got {src.weight}")
        _check_encoding(src.encoding, where, label)
        if bool(src.hf) == bool(src.path):
            raise ConfigError(f"{where}: {label} needs exactly one of hf = \"dataset id\" or path = \"file or folder\"")
        if src.path:
            p = Path(expand(src.path, where, f"{label}.path"))
            src.path = str(p if p.is_absolute() else (base_dir / p).resolve())
        elif src.hf.startswith((".", "~")):  # a local dataset folder: a run reads its copy of the mix elsewhere
            p = Path(os.path.expanduser(src.hf))
            src.hf = str(p if p.is_absolute() else (base_dir / p).resolve())
        mix.sources.append(src)
    if not 0 <= mix.validation_share < 0.5:
        raise ConfigError(f"{where}: validation_share must be in [0, 0.5), got {mix.validation_share}")
    tok = expand(mix.tokenizer, where, "tokenizer")
    if tok.startswith((".", "/")) or os.sep in tok and Path(base_dir / tok).exists():
        tp = Path(tok)
        tok = str(tp if tp.is_absolute() else (base_dir / tp).resolve())
    mix.tokenizer = tok
    return mix


def load_mix(name_or_path: str) -> MixConfig:
    path = resolve_mix_path(name_or_path)
    data = read_toml(path)
    return mix_from_dict(data, str(path), path.resolve().parent, name=path.stem)


def dump_toml(data: dict) -> str:
    """Plain nested dicts, lists and scalars as TOML (profiles, mixes, run.toml); None values are left out."""
    import tomli_w

    return tomli_w.dumps(_without_none(data))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value]
    return value


