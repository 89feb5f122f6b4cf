"""Writing a new profile: from the New run form's edits or from a sweep's variant. Never over an existing file, and
nothing that would not load."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from engine.config.errors import ConfigError
from engine.config.loading import (
    apply_overrides,
    dump_toml,
    profile_from_dict,
    profiles_dir,
    read_toml,
    resolve_profile_path,
)
from engine.config.paths import writable_folder
from engine.files import write_text_atomic

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_new_name(name: str, folder: Path, kind: str) -> Path:
    name = name.strip()
    if not name:
        raise ConfigError(f"type a name for the new {kind} in 'save {kind} as' first")
    if not NAME_RE.match(name):
        raise ConfigError(f"{kind} name {name!r}: use letters, digits, '.', '_' or '-' (no spaces or slashes)")
    path = folder / f"{name}.toml"
    if path.exists():
        raise ConfigError(f"{path}: a {kind} with this name exists; choose another name")
    return path


def new_profile_path(name: str) -> Path:
    """Where a new profile NAME goes, refused when the name is not one, is taken, or its folder cannot be written:
    a command that saves what it measured asks before it measures."""
    return check_new_name(name, writable_folder(profiles_dir(), "SPARKNET_PROFILES"), "profile")


def write_new_profile(data: dict, name: str) -> Path:
    """profiles/<name>.toml holding `data`, checked to load first. Raises ConfigError."""
    path = new_profile_path(name)
    profile_from_dict(copy.deepcopy(data), str(path), name=path.stem)  # what is written must load
    try:
        write_text_atomic(path, dump_toml(data))
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def save_variant(base_profile: str, mix: str, overrides: list[str], name: str, description: str,
                 measured: str) -> Path:
    """A sweep's variant as a profile of its own: the base profile with the variant's settings, its token budget
    the base's (the sweep's proxy budget is not the recipe's), and where it came from."""
    data = apply_overrides(read_toml(resolve_profile_path(base_profile)), overrides)
    data.update(description=description, mix=mix, measured=measured)
    return write_new_profile(data, name)
