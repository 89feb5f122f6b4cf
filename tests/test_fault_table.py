"""Every verb through one table of faults: a setting that names a file instead of a folder, an input that is not
what it says, a run that is missing or damaged. Each answer is one line with exit code 2, no traceback, and
nothing made or changed on disk. Real files, the real command (in this process, except for --detach)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import PROJECT, sparknet

DEMO = PROJECT / "profiles" / "mixes" / "demo"
TRAIN = ["train", "--profile", "{profile}", "--mix", "{mix}", "--set", "run.tokens=4096", "--set",
         "run.final_eval=false"]
VERBS = {
    "train": TRAIN,
    "train --check": [*TRAIN, "--check"],
    "train --detach": [*TRAIN, "--detach"],
    "prepare": ["prepare", "--mix", "{mix}"],
    "bench": ["bench", "--profile", "{profile}", "--mix", "{mix}", "--steps", "2"],
    "doctor": ["doctor", "--profile", "{profile}"],
    "sweep": ["sweep", "{sweep}"],
    "lr-find": ["lr-find", "--profile", "{profile}", "--mix", "{mix}", "--steps", "20"],
    "runs": ["runs"],
    "stop": ["stop", "{run}"],
    "resume": ["resume", "{run}"],
    "eval": ["eval", "{run}", "--device", "cpu"],
    "export": ["export", "{run}", "{out}"],
}
RUN_VERBS = ("stop", "resume", "eval", "export")
DATA_VERBS = ("train", "train --check", "train --detach", "prepare", "bench", "lr-find", "sweep")


def _mix_text(tokenizer: Path, stories: Path) -> str:
    return (f'tokenizer = "{tokenizer}"\nvalidation_share = 0.1\n\n'
            f'[[sources]]\nname = "stories"\nweight = 1.0\npath = "{stories}"\nrepeat = true\n')


class Place:
    """A private folder with the inputs every verb reads, each sound until a fault spoils one."""

    def __init__(self, root: Path):
        self.root = root
        self.logs, self.cache, self.out = root / "logs", root / "cache", root / "out"
        self.logs.mkdir()
        self.stories = root / "stories.jsonl"
        shutil.copy(DEMO / "stories.jsonl", self.stories)
        self.tokenizer = root / "tokenizer"
        shutil.copytree(DEMO / "tokenizer", self.tokenizer)
        self.mix = root / "mix.toml"
        self.mix.write_text(_mix_text(self.tokenizer, self.stories))
        self.profile = PROJECT / "profiles" / "tiny-cpu.toml"
        self.sweep = root / "sweep.toml"
        self.sweep.write_text(f'profile = "tiny-cpu"\nmix = "{self.mix}"\ntokens = 4096\nseeds = [1]\n'
                              '[grid]\n"optim.lr" = [1e-3, 3e-3]\n')
        self.run = "no-such-run"
        self.env = {**os.environ, "SPARKNET_LOGS": str(self.logs), "SPARKNET_CACHE": str(self.cache)}

    def args(self, verb: str) -> list[str]:
        return [a.format(profile=self.profile, mix=self.mix, sweep=self.sweep, run=self.run, out=self.out)
                for a in VERBS[verb]]

    def contents(self) -> dict[str, bytes]:
        """Every file and its bytes, lock files aside: taking a lock writes nothing a reader uses."""
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*"))
                if p.is_file() and not p.name.endswith(".lock")}


def logs_is_a_file(place: Place) -> tuple[str, ...]:
    shutil.rmtree(place.logs)
    place.logs.write_text("my notes\n")
    return "SPARKNET_LOGS", str(place.logs), "not a folder"


def cache_under_a_file(place: Place) -> tuple[str, ...]:
    (place.root / "notes").write_text("my notes\n")
    place.cache = place.root / "notes" / "cache"
    place.env["SPARKNET_CACHE"] = str(place.cache)
    return "SPARKNET_CACHE", str(place.root / "notes"), "not a folder"


def logs_cannot_be_made(place: Place) -> tuple[str, ...]:
    place.env["SPARKNET_LOGS"] = "/proc/sparknet-logs"  # no folder can be made in /proc, even by root
    return "SPARKNET_LOGS", "cannot write in /proc", "a folder you can write"


def cache_cannot_be_made(place: Place) -> tuple[str, ...]:
    place.env["SPARKNET_CACHE"] = "/proc/sparknet-cache"
    return "SPARKNET_CACHE", "cannot write in /proc", "a folder you can write"


def alert_url_unknown(place: Place) -> tuple[str, ...]:
    place.env["SPARKNET_NOTIFY"] = "json://127.0.0.1:9/hook garbage://secret"
    return "SPARKNET_NOTIFY", "notification URL garbage://… is not one apprise understands", "remove it"


def alert_file_url_unknown(place: Place) -> tuple[str, ...]:
    (place.root / "config" / "sparknet").mkdir(parents=True)
    (place.root / "config" / "sparknet" / "notify.toml").write_text('urls = ["ntfy://my-topic", "nonsense"]\n')
    place.env["XDG_CONFIG_HOME"] = str(place.root / "config")
    place.env.pop("SPARKNET_NOTIFY", None)
    return str(place.root / "config" / "sparknet" / "notify.toml"), "URL nonsense is not one apprise understands"


def telemetry_interval_not_a_number(place: Place) -> tuple[str, ...]:
    place.env["SPARKNET_TELEMETRY_INTERVAL"] = "5s"  # read by the trainer once the run had started
    return "SPARKNET_TELEMETRY_INTERVAL='5s'", "a number of seconds"


def profile_not_toml(place: Place) -> tuple[str, ...]:
    place.profile = place.root / "mine.toml"
    place.profile.write_text("[model\nwidth = 8\n")
    place.sweep.write_text(f'profile = "{place.profile}"\nmix = "{place.mix}"\n[grid]\n"optim.lr" = [1e-3]\n')
    return str(place.profile), "not valid TOML"


def tokenizer_damaged(place: Place) -> tuple[str, ...]:
    for f in place.tokenizer.iterdir():
        f.write_text("{\"version\": ")
    return str(place.tokenizer),


def source_not_text(place: Place) -> tuple[str, ...]:
    place.stories = place.root / "stories.txt"  # binary bytes under a text file's name
    place.stories.write_bytes((b"a little text " + bytes(range(128, 256))) * 4096)
    place.mix.write_text(_mix_text(place.tokenizer, place.stories))
    return str(place.stories), "UTF-8"


def source_missing(place: Place) -> tuple[str, ...]:
    place.stories.unlink()
    return str(place.stories),


def run_missing(place: Place) -> tuple[str, ...]:
    return "no-such-run", "not found"


def run_record_damaged(place: Place) -> tuple[str, ...]:
    run = place.logs / "20260101-000000-damaged"
    run.mkdir()
    (run / "run.toml").write_text("profile = [\n")
    (run / "status.json").write_text("{\"state\": ")
    place.run = str(run)
    return run.name,


def run_record_empty(place: Place) -> tuple[str, ...]:
    run = place.logs / "20260101-000000-empty"
    run.mkdir()
    (run / "run.toml").write_text("")
    (run / "status.json").write_text(json.dumps({"state": "stopped", "step": 3, "steps": 9}))
    place.run = run.name
    return run.name,


def run_state_unknown(place: Place) -> tuple[str, ...]:
    run = place.logs / "20260101-000000-edited"
    run.mkdir()
    (run / "run.toml").write_text('run_id = "20260101-000000-edited"\n')
    (run / "status.json").write_text(json.dumps({"state": "training", "step": "x"}))  # no state SparkNet writes
    place.run = run.name
    return run.name, "is unknown, not running"


def run_source_gone(place: Place) -> tuple[str, ...]:
    sparknet(*place.args("train"), env=place.env)
    (run,) = place.logs.iterdir()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "stopped"}))  # as a run stopped part-way reads
    place.run = run.name
    place.stories.unlink()  # moved away since, and its cached tokens with it
    shutil.rmtree(place.cache)
    return f"path {place.stories} does not exist",


FAULTS = {
    logs_is_a_file: ("train", "train --check", "train --detach", "sweep", "lr-find", "runs", *RUN_VERBS),
    cache_under_a_file: (*DATA_VERBS, "doctor"),
    logs_cannot_be_made: ("train", "train --check", "train --detach", "sweep", "lr-find"),
    cache_cannot_be_made: (*DATA_VERBS, "doctor"),
    alert_url_unknown: ("train", "train --check", "train --detach", "sweep", "lr-find"),
    alert_file_url_unknown: ("train", "train --check", "train --detach", "sweep", "lr-find"),
    telemetry_interval_not_a_number: ("train", "train --check", "train --detach", "sweep", "lr-find"),
    profile_not_toml: ("train", "train --check", "bench", "doctor", "sweep", "lr-find"),
    tokenizer_damaged: DATA_VERBS,
    source_not_text: ("train", "train --check", "prepare", "lr-find", "sweep"),
    source_missing: DATA_VERBS,
    run_missing: RUN_VERBS,
    run_record_damaged: RUN_VERBS,
    run_record_empty: ("resume", "eval", "export"),
    run_state_unknown: ("stop",),
    run_source_gone: ("resume",),
}
CASES = [pytest.param(fault, verb, id=f"{fault.__name__}-{verb.replace(' --', '-')}")
         for fault, verbs in FAULTS.items() for verb in verbs]


@pytest.mark.parametrize(("fault", "verb"), CASES)
def test_a_fault_is_one_line_with_exit_2_and_changes_nothing(tmp_path, fault, verb):
    place = Place(tmp_path)
    words = fault(place)
    before = place.contents()
    proc = sparknet(*place.args(verb), check=False, env=place.env)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "Traceback" not in err and "\n" not in err, (proc.returncode, proc.stderr)
    assert err.startswith(f"sparknet {verb.split()[0]}: error: "), err
    assert all(word in err for word in words), (words, err)
    assert place.contents() == before, "the refused command made or changed files"
    assert not place.out.exists()
