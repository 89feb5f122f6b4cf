"""The engine never imports Textual: it runs headless on a GPU box without the panel's dependencies."""

import subprocess
import sys
from pathlib import Path
from cli_helpers import scaled

PROJECT = Path(__file__).resolve().parents[1]


def test_engine_never_imports_textual():
    code = ("import sys, engine.cli, engine.train, engine.data, engine.evaluate, engine.bench, engine.telemetry; "
            "engine.cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('textual', 'sparknet_tui')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=scaled(120))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_sparknet_command_opens_the_panel_only_without_a_verb():
    from sparknet_tui.entry import is_panel

    assert is_panel([]) and is_panel(["--run", "RUN"]) and is_panel(["--logs=/tmp/logs"])
    assert not is_panel(["runs"]) and not is_panel(["--help"]) and not is_panel(["train", "--run", "x"])
    # a verb through the command's own entry loads the engine's CLI and never the panel
    code = ("import sys, sparknet_tui.entry as e; rc = e.main(['runs']); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=scaled(120))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert "_run" not in subprocess.run([sys.executable, "-m", "engine.cli", "--help"], cwd=PROJECT,
                                        capture_output=True, text=True, timeout=scaled(120)).stdout


def module_imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that a file imports, at module level or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
    return found


def test_no_import_cycles_and_the_engine_never_names_the_panel():
    modules = {}
    for path in sorted((PROJECT / "engine").rglob("*.py")):
        rel = path.relative_to(PROJECT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
        assert "sparknet_tui" not in path.read_text(), f"{path} names the panel"
    graph = {m: {i for i in module_imports(p, "engine") if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle through them
    graph = {m: {i for i in deps if not (m != "engine" and i.startswith(m + "."))} for m, deps in graph.items()}

    def visit(m, stack):
        assert m not in stack, "import cycle: " + " -> ".join(stack[stack.index(m):] + [m])
        for dep in graph[m]:
            visit(dep, stack + [m])

    for m in graph:
        visit(m, [])


def test_every_option_of_train_resume_and_bench_says_what_it_does():
    import argparse

    from engine.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for verb in ("train", "resume", "bench"):
        silent = [a.option_strings or a.dest for a in verbs[verb]._actions if not a.help]
        assert silent in ([], ["run"]), (verb, silent)  # a positional RUN speaks for itself
