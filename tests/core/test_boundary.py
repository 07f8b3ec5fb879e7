"""The core package must import without kedro or mlflow (it runs in notebooks and on bare GPU machines)."""

import pkgutil
import subprocess
import sys

import easytune.core


def _core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(easytune.core.__path__, "easytune.core."))


def test_core_imports_without_kedro_or_mlflow(project_root):
    modules = _core_modules()
    assert "easytune.core.motion.features" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'kedro', 'kedro_datasets', 'kedro_mlflow', 'mlflow'})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project_root)
    assert result.returncode == 0, f"core pulled in a framework: {result.stdout} {result.stderr[-2000:]}"


def test_core_sources_do_not_mention_framework_imports(project_root):
    offenders = []
    for path in (project_root / "src" / "easytune" / "core").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and stripped.split()[1].split(".")[0] in {
                "kedro", "kedro_datasets", "kedro_mlflow", "mlflow"
            }:
                offenders.append(f"{path}: {stripped}")
    assert not offenders, offenders
