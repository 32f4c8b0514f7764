"""Project-level checks: dependency lists agree, pins are right, the package stays light."""

import re
import subprocess
import sys
from pathlib import Path

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
