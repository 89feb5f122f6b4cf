"""A sweep spec (SPEC.toml): a base profile and mix, a proxy budget, variants, seeds and the metric that ranks them.

    name = "lr"                      # optional: the file's name
    profile = "modern-70m"
    mix = "challenge-1b"             # optional: the profile's own mix
    tokens = 16_000_000              # the proxy budget of every run (default: the 16M-token protocol)
    seeds = [1337, 42]               # optional: the profile's seed
    metric = "val_loss"              # or "wikitext_ppl" (a mix with tokenizer = "gpt2")
    set = ["run.eval_every=65"]      # optional: for every variant

    [grid]                           # every combination of these values ...
    "optim.lr" = [6e-3, 1.2e-2]

    [[variants]]                     # ... and/or variants spelled out
    name = "narrow"
    set = ["model.mlp_hidden=1024"]

Every variant is validated, with its overrides, before anything starts.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.config.errors import ConfigError
from engine.config.loading import load_run_inputs, read_toml

PROXY_TOKENS = 16_000_000  # the protocol that ranks recipes (docs/lab/quality.md)
METRICS = ("val_loss", "wikitext_ppl")
KEYS = ("name", "profile", "mix", "tokens", "seeds", "metric", "set", "grid", "variants")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Variant:
    name: str
    overrides: list[str]  # what differs from the base profile


@dataclass
class SweepSpec:
    name: str
    profile: str
    mix: str | None
    tokens: int
    seeds: list[int]
    metric: str
    common: list[str] = field(default_factory=list)  # overrides of every variant
    variants: list[Variant] = field(default_factory=list)

    def run_overrides(self, variant: Variant, seed: int | None) -> list[str]:
        """The `--set` of one run of `variant`; `seed` None keeps the profile's own."""
        seeded = [f"run.seed={seed}"] if seed is not None else []
        return [f"run.tokens={self.tokens}", *seeded, *self.common, *variant.overrides]

    def to_dict(self) -> dict:
        return {"name": self.name, "profile": self.profile, "mix": self.mix, "tokens": self.tokens,
                "seeds": self.seeds, "metric": self.metric, "set": self.common,
                "variants": [{"name": v.name, "set": v.overrides} for v in self.variants]}


def _short(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _toml_value(value: object) -> str:
    """A grid value as `--set` reads it: true/false, a quoted string, a number."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, str) else str(value)


def grid_variants(grid: dict, where: str) -> list[Variant]:
    """Every combination of the grid's values, named by the last part of each key: lr=0.006,muon_lr=0.02."""
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], list) or not grid[key]:
            raise ConfigError(f"{where}: grid.\"{key}\" must be a list of values, e.g. \"{key}\" = [1, 2]")
    variants = []
    for values in itertools.product(*(grid[k] for k in keys)):
        name = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in zip(keys, values))
        variants.append(Variant(name, [f"{k}={_toml_value(v)}" for k, v in zip(keys, values)]))
    return variants


def listed_variants(entries: object, where: str) -> list[Variant]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: variants must be [[variants]] tables with name and set")
    variants = []
    for i, entry in enumerate(entries, 1):
        name, overrides = entry.get("name"), entry.get("set", [])
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: variant {i} has no name; add name = \"...\"")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"{where}: variant '{name}': set must be a list of \"key=value\" strings")
        variants.append(Variant(name, list(overrides)))
    return variants


def _strings(value: object, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of \"key=value\" strings")
    return list(value)


def load_sweep_spec(path: Path) -> SweepSpec:
    """Read and check a spec; every variant and seed is validated as a run would be. Raises ConfigError."""
    where = str(path)
    data = read_toml(path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; a sweep spec has {', '.join(KEYS)}")
    name = str(data.get("name") or path.stem)
    if not NAME.fullmatch(name):
        raise ConfigError(f"{where}: name '{name}' must be letters, digits, '.', '_' or '-' (at most 64)")
    if not isinstance(data.get("profile"), str):
        raise ConfigError(f"{where}: profile is missing; add profile = \"NAME\" (a profile in profiles/)")
    tokens, seeds, metric = data.get("tokens", PROXY_TOKENS), data.get("seeds"), data.get("metric", "val_loss")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
        raise ConfigError(f"{where}: tokens must be a positive whole number, got {tokens!r}")
    if seeds is not None and (not isinstance(seeds, list) or not seeds
                              or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{where}: seeds must be a list of whole numbers, e.g. seeds = [1337, 42]")
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric must be {' or '.join(METRICS)}, got {metric!r}")
    variants = listed_variants(data.get("variants", []), where)
    if "grid" in data:
        if not isinstance(data["grid"], dict) or not data["grid"]:
            raise ConfigError(f"{where}: [grid] must map keys to lists of values")
        variants += grid_variants(data["grid"], where)
    spec = SweepSpec(name, data["profile"], data.get("mix"), tokens, [], metric,
                     _strings(data.get("set", []), where, "set"), variants or [Variant("base", [])])
    _check_variants(spec, seeds, where)
    return spec


def _check_variants(spec: SweepSpec, seeds: list[int] | None, where: str) -> None:
    names = [v.name for v in spec.variants]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: two variants are named '{twice[0]}'; give each its own name")
    for variant in spec.variants:
        try:
            profile, mix = load_run_inputs(spec.profile, spec.mix, spec.run_overrides(variant, None))
        except ConfigError as e:
            raise ConfigError(f"{where}: variant '{variant.name}': {e}") from None
        if spec.metric == "wikitext_ppl" and mix.tokenizer != "gpt2":
            raise ConfigError(f"{where}: metric wikitext_ppl needs a mix with tokenizer = \"gpt2\"; mix {mix.name} "
                              "has its own tokenizer, so rank by val_loss")
        spec.mix = spec.mix or mix.name
        spec.seeds = list(seeds) if seeds is not None else [profile.run.seed]
