"""The engine never imports Textual: it runs headless on a GPU box without the panel's dependencies."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import scaled

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_engine_never_imports_textual():
    code = ("import sys, engine.cli.main, engine.cli.parser, engine.train.trainer, engine.data, engine.evaluate, engine.cli.throughput, "
            "engine.hardware.telemetry; engine.cli.parser.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'sparknet_tui')))")
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


def test_the_check_of_a_cpu_run_never_loads_torch(tmp_path):
    """The New run screen asks `train --check` again as its form changes: a CPU run's check reads files and asks
    no device, and torch alone takes a second or more to import. Alerts and logs are checked as a run needs."""
    code = ("import sys; from engine.cli.main import main; rc = main(['train', '--check', '--profile', 'tiny-cpu']); "
            "print(rc, sorted(m for m in ('torch', 'apprise') if m in sys.modules))")
    env = {**os.environ, "SPARKNET_LOGS": str(tmp_path / "logs"), "SPARKNET_NOTIFY": "", "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, env=env,
                         timeout=scaled(120))
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "0 []", (out.stdout, out.stderr)


# The engine's floors, lowest first: a module imports only from its own package or from a lower floor (two
# packages on one floor never import each other). The root holds the errors and the torch-free helpers.
FLOORS = [("engine", "engine.files", "engine.formatting"), ("engine.config",), ("engine.runs",), ("engine.data",),
          ("engine.hardware",), ("engine.kernels",), ("engine.models",), ("engine.evaluate",), ("engine.train",),
          ("engine.cli",)]
# what the panel may read of the engine: the torch-free contract (and the command's entry, which runs the CLI
# in place of the panel)
PANEL_MAY_IMPORT = ("engine", "engine.files", "engine.formatting", "engine.config", "engine.runs")


def module_name(path: Path) -> str:
    rel = path.relative_to(PROJECT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def module_imports(path: Path, known: set[str]) -> set[str]:
    """The modules among `known` that a file imports, at module level or inside a function: `from a.b import c`
    names a.b.c when that is a module, else a.b."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & known


def import_graph(root: str) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted((PROJECT / root).rglob("*.py"))}
    return {m: module_imports(p, set(paths)) - {m} for m, p in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done, path = set(), []

    def visit(m):
        if m in path:
            return path[path.index(m):] + [m]
        if m in done:
            return None
        path.append(m)
        for dep in sorted(graph[m]):
            if cycle := visit(dep):
                return cycle
        path.pop()
        done.add(m)
        return None

    return next((c for m in sorted(graph) if (c := visit(m))), None)


def floor_of(module: str) -> tuple[int, str]:
    for level, rooms in enumerate(FLOORS):
        for room in rooms:
            if module == room or (room != "engine" and module.startswith(room + ".")):
                return level, room
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS")


def test_the_cycle_finder_counts_function_imports_and_a_package_s_own_submodules():
    assert find_cycle({"a": {"a.b"}, "a.b": {"a"}}) == ["a", "a.b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_engine_or_the_panel():
    for root in ("engine", "sparknet_tui"):
        assert find_cycle(import_graph(root)) is None, f"import cycle in {root}/: {find_cycle(import_graph(root))}"


def test_every_engine_module_imports_only_its_own_package_and_lower_floors():
    wrong = []
    for module, deps in import_graph("engine").items():
        level, room = floor_of(module)
        for dep in deps:
            dep_level, dep_room = floor_of(dep)
            if dep_room != room and dep_level >= level:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_the_engine_keeps_at_most_eight_modules_at_its_root_and_never_names_the_panel():
    assert len(list((PROJECT / "engine").glob("*.py"))) <= 8
    for path in (PROJECT / "engine").rglob("*.py"):
        assert "sparknet_tui" not in path.read_text(), f"{path} names the panel"


def test_the_panel_reads_only_the_torch_free_contract():
    engine = {module_name(p) for p in (PROJECT / "engine").rglob("*.py")}
    for path in (PROJECT / "sparknet_tui").rglob("*.py"):
        for dep in module_imports(path, engine):
            allowed = any(dep == room or dep.startswith(room + ".") for room in PANEL_MAY_IMPORT[1:])
            assert allowed or dep == "engine" or (path.name == "entry.py" and dep == "engine.cli.main"), \
                f"{path.relative_to(PROJECT)} imports {dep}"
    screens = ", ".join(f"sparknet_tui.screens.{p.stem}" for p in (PROJECT / "sparknet_tui" / "screens").glob("*.py"))
    code = (f"import sys, sparknet_tui.app, sparknet_tui.plan, {screens}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'transformers', 'datasets'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=scaled(120))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_file_over_400_lines_and_no_function_over_50_in_the_engine_or_the_panel():
    import ast

    long = []
    for root in ("engine", "sparknet_tui"):
        for path in (PROJECT / root).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > 400:
                long.append(f"{path.relative_to(PROJECT)}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                    long.append(f"{path.relative_to(PROJECT)}:{node.lineno} {node.name}")
    assert long == []


def test_every_option_of_train_resume_and_bench_says_what_it_does():
    import argparse

    from engine.cli.parser import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for verb in ("train", "resume", "bench"):
        silent = [a.option_strings or a.dest for a in verbs[verb]._actions if not a.help]
        assert silent in ([], ["run"]), (verb, silent)  # a positional RUN speaks for itself
