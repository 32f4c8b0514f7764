"""Project-level checks: dependency lists agree, pins are right, the package stays light."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name_and_spec(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("test", "dev", "hed"):
        reqs += project["optional-dependencies"][extra]
    return dict(_name_and_spec(r) for r in reqs)


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            name, spec = _name_and_spec(item)
            if name in ("python", "pip", "-e"):
                continue
            reqs[name] = spec
    return reqs


def test_environment_yml_matches_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert sorted(py) == sorted(env), (
        f"only in pyproject: {sorted(set(py) - set(env))}; "
        f"only in environment.yml: {sorted(set(env) - set(py))}"
    )
    differing = {k: (py[k], env[k]) for k in py if py[k] != env[k]}
    assert not differing, f"version ranges differ (pyproject, environment.yml): {differing}"


def test_lock_pins_cpu_torch_and_every_dependency():
    lock = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, spec = _name_and_spec(line)
            assert spec.startswith("=="), f"lock entry is not an exact pin: {line}"
            lock[name] = spec[2:]
    # The plain version: pip resolves it to the local CPU wheel, never the CUDA build.
    assert lock["torch"] == "2.13.0"
    missing = sorted(set(_pyproject_requirements()) - set(lock))
    assert not missing, f"dependencies without a pin in requirements/lock.txt: {missing}"
    assert "torchvision" not in lock, "torchvision does not import with the CPU torch build"


def test_import_sketchedit_does_not_import_the_notebook_stack():
    code = (
        "import sys, sketchedit, sketchedit.nets, sketchedit.data, sketchedit.inference;"
        "heavy = [m for m in ('ipywidgets', 'ipycanvas', 'jupyterlab', 'notebook', "
        "'ipykernel', 'IPython', 'matplotlib.pyplot') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`import sketchedit` pulled in: {out.stdout.strip()}"


def test_every_notebook_has_a_parameters_cell_and_no_stored_outputs():
    import json

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no notebooks found"
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: expected one cell tagged 'parameters'"
        assert "figures_dir" in "".join(tagged[0]["source"]), f"{nb_path.name}: no figures_dir"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{nb_path.name}: stored outputs (strip them)"


# --------------------------------------------------------------------------------------------
# The package's import graph (issue 9: the networks imported weights.py, which imported them).
# --------------------------------------------------------------------------------------------
#: What sketchedit.nets may import from the rest of the package: the input conventions and
#: shape checks of images.py, nothing else. In particular no checkpoint or file module
#: (checkpoints, fileio, train_checkpoints): the networks know no file format; the official
#: tensor names live in nets/official.py as plain tables.
NETS_MAY_IMPORT = {"sketchedit.images"}


def _package_modules(root: Path) -> dict[str, Path]:
    """``{"sketchedit.nets.blocks": path, "sketchedit.nets": .../__init__.py, ...}``."""
    modules = {}
    for path in sorted((root / "sketchedit").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path, *, function_level: bool) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, read with ``ast`` (nothing imported).

    ``from sketchedit.nets import blocks`` is an edge to ``sketchedit.nets.blocks``; ``from
    sketchedit.nets import Generator`` one to ``sketchedit.nets``. Imports inside functions
    count only with ``function_level`` (they run later, but tie the modules all the same).
    """
    import ast

    modules = _package_modules(root)

    def known(name: str) -> str:  # the module itself, or the package that holds the name
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo = list(ast.iter_child_nodes(ast.parse(path.read_text())))
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not function_level:
                continue
            todo += ast.iter_child_nodes(node)
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .blocks import x
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[name] |= {known(t) for t in targets if t.split(".")[0] == "sketchedit"}
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


@pytest.mark.parametrize("function_level", [False, True], ids=["module level", "all imports"])
def test_no_import_cycles(function_level):
    # At module level a cycle breaks ``import``; counting the imports inside functions too
    # catches the tangle issue 9 found (nets.generator -> weights -> nets.generator, all
    # through imports inside functions, so the package imported fine).
    graph = import_graph(ROOT, function_level=function_level)
    assert len(graph) > 20 and graph["sketchedit.editor"], "the graph reader found no imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nets_know_no_file_format():
    graph = import_graph(ROOT, function_level=True)
    outside = {
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.split(".")[:2] == ["sketchedit", "nets"]
        for target in targets
        if target.split(".")[:2] != ["sketchedit", "nets"] and target not in NETS_MAY_IMPORT
    }
    assert not outside, f"sketchedit.nets may import only {sorted(NETS_MAY_IMPORT)}: {outside}"


def test_readme_package_map_lists_every_module():
    """Each module of the package has a row in README's "Package map" (a newcomer's index)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Package map", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        first = re.findall(r"`([^`]+\.py)`", row.split("|")[1])
        folder = first[0].rpartition("/")[0] if first else ""
        # "`sketchedit/presets.py`, `train.py`": a bare name is in the first one's folder.
        listed |= {name if "/" in name else f"{folder}/{name}" for name in first}
    modules = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "sketchedit").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert not modules - listed, f"missing from README's package map: {sorted(modules - listed)}"
