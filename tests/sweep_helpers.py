"""Writing sweep specs of tiny-cpu runs on the demo mix, and reading the sweep file a sweep keeps."""

from __future__ import annotations

from engine.files import read_json

BASE = ["run.log_every=1", "run.eval_every=5", "run.eval_tokens=2048", "run.final_eval=false",
        "batch.grad_accum=1"]


def write_spec(folder, name: str, body: str, tokens: int = 10240, seeds: str = "[1]", base=BASE) -> str:
    spec = folder / f"{name}.toml"
    common = ", ".join(f'"{s}"' for s in base)
    spec.write_text(f'name = "{name}"\nprofile = "tiny-cpu"\nmix = "demo"\ntokens = {tokens}\nseeds = {seeds}\n'
                    f"set = [{common}]\n{body}")
    return str(spec)


def sweep_file(logs, name: str) -> dict:
    return read_json(logs / "sweeps" / name / "sweep.json")
