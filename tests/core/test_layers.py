"""The core's folders are layers: a module imports only from its own folder or from a layer below it.

Order, bottom to top (layers on one line are peers and may not import each other):
infra < data < motion < models < sampling < export < {reward, pretrain, evaluation, published} < finetune < study.
``published`` (importers of released checkpoints, evaluator, text encoders) builds on models and sits with the other
consumers of models, below finetune and study, which may use what it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAYERS: dict[str, int] = {
    "infra": 0, "data": 1, "motion": 2, "models": 3, "sampling": 4, "export": 5,
    "reward": 6, "pretrain": 6, "evaluation": 6, "published": 6, "finetune": 7, "study": 8,
}


def _imported_core_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, dotted module under easytune.core) for every import in ``path`` (top level and inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from easytune.core import x` imports the submodule x
            found += [(node.lineno, f"{module}.{a.name}" if module == "easytune.core" else module) for a in node.names]
    return [(line, m[len("easytune.core."):]) for line, m in found if m.startswith("easytune.core.")]


def layer_violations(core_dir: Path) -> list[str]:
    """Every import in ``core_dir`` that goes to a higher layer or a peer, and every module outside a layer."""
    problems = []
    for path in sorted(core_dir.rglob("*.py")):
        rel = path.relative_to(core_dir)
        if len(rel.parts) == 1:
            if rel.name != "__init__.py":
                problems.append(f"{rel}: a module at the core's root belongs in a layer folder")
            continue
        layer = rel.parts[0]
        if layer not in LAYERS:
            problems.append(f"{rel}: folder {layer!r} is not a declared layer")
            continue
        package = ".".join(("easytune", "core", *rel.parts[:-1]))
        for line, target in _imported_core_modules(path, package):
            target_layer = target.split(".")[0]
            if target_layer == layer:
                continue
            if target_layer not in LAYERS:
                problems.append(f"{rel}:{line}: imports easytune.core.{target}, outside every layer")
            elif LAYERS[target_layer] >= LAYERS[layer]:
                problems.append(f"{rel}:{line}: {layer} imports easytune.core.{target} ({target_layer} is not below it)")
    return problems


def test_core_imports_flow_downwards(project_root):
    assert layer_violations(project_root / "src" / "easytune" / "core") == []


def test_every_layer_folder_exists(project_root):
    core = project_root / "src" / "easytune" / "core"
    assert sorted(p.name for p in core.iterdir() if (p / "__init__.py").exists()) == sorted(LAYERS)


@pytest.mark.parametrize(("source", "expected"), [
    ("from easytune.core.sampling.generator import MotionGenerator\n", "models imports easytune.core.sampling"),
    ("from easytune.core import finetune\n", "models imports easytune.core.finetune"),
    ("def f():\n    import easytune.core.export.render\n", "models imports easytune.core.export.render"),
    ("from ..reward import reward\n", "models imports easytune.core.reward"),
])
def test_an_upward_import_is_reported(tmp_path, source, expected):
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "config.py").write_text("")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ok.py").write_text("from easytune.core.infra.config import POSITIVE\nfrom . import ok\n")
    (tmp_path / "models" / "bad.py").write_text(source)
    problems = layer_violations(tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_peer_import_and_a_loose_module_are_reported(tmp_path):
    (tmp_path / "reward").mkdir()
    (tmp_path / "reward" / "x.py").write_text("from easytune.core.evaluation.metrics import fid\n")
    (tmp_path / "loose.py").write_text("")
    problems = layer_violations(tmp_path)
    assert any("reward imports easytune.core.evaluation.metrics" in p for p in problems)
    assert any("loose.py" in p for p in problems)
