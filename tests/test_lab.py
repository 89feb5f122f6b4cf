"""The lab's scripts (lab/: kernel timings, profiles, the quality sweep) are not part of the product, but each one
must still run against the engine as it is: every engine module and name a script imports exists."""

import ast
import importlib
import importlib.util
import py_compile
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "lab"
SCRIPTS = sorted(LAB.glob("*.py"))


def engine_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each `from engine... import name` and (module, None) for each `import engine...`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "engine"]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_lab_script_compiles_and_imports_what_the_engine_has(script, tmp_path):
    py_compile.compile(str(script), cfile=str(tmp_path / "out.pyc"), doraise=True)
    for module, name in engine_imports(script):
        loaded = importlib.import_module(module)
        if name is not None:
            assert hasattr(loaded, name) or importlib.util.find_spec(f"{module}.{name}"), f"{module}.{name}"
