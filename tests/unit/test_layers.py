"""Layers import downward only (DESIGN.md, "The shape of the code"): every r1lab module's imports, read from its
source with ast (imports inside functions and under TYPE_CHECKING count too), go to its own layer or below.

Same-layer imports between packages are allowed when they do not form a circle, as DESIGN.md says.
A new top-level package or module must be given its place in LAYERS (and in DESIGN.md) before it can be imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import r1lab

# Top to bottom, as DESIGN.md lists them. Names on one line share a layer.
# - the four-arm comparison is experiments/compare.py, the experiments' built-in expansion over the pipeline.
# - eval is "a peer of stages" that uses rollout, rewards, tasks, data, models: it sits right under stages, so a
#   stage may evaluate (RL's periodic eval) but eval never imports a stage; nor does it import training.
# - chat (`r1lab chat`) is a terminal front end over models: only cli imports it.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),
    ("chat",),
    ("experiments",),
    ("doctor",),  # `r1lab doctor`: runs stage pieces and reads recipes through the pipeline, before training
    ("pipeline",),
    ("report",),
    ("stages",),
    ("eval",),
    ("training",),
    ("rollout",),
    ("rewards",),
    ("tasks",),  # above tools: the tool-use tasks (lookup) build their demonstrations by running the tools
    ("tools", "sandbox"),
    ("data",),
    ("models",),
    ("algorithms",),
    ("config", "registry", "errors"),
]
RANK = {name: len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(r1lab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every r1lab module that `source` imports, anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "r1lab":  # `from r1lab import cli` imports the module r1lab.cli
                found += [(node.lineno, f"r1lab.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "r1lab" or name.startswith("r1lab.")]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" : the package root r1lab/__init__.py


def violations(source: str, path: str, module: str, is_package: bool = False) -> list[str]:
    """Upward imports in one file, as 'path:line: a -> b (why)'."""
    here = layer_of(module)
    out = []
    for line, target in imported_modules(source, module, is_package):
        there = layer_of(target)
        if here == there:
            continue
        if "" in (here, there):
            out.append(
                f"{path}:{line}: {module} -> {target} (the package root imports nothing and is not imported)"
            )
        elif here not in RANK or there not in RANK:
            unknown = here if here not in RANK else there
            out.append(f"{path}:{line}: {module} -> {target} ({unknown!r} has no layer: add it to LAYERS)")
        elif RANK[there] > RANK[here]:
            out.append(f"{path}:{line}: {module} -> {target} ({here} is below {there})")
    return out


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for _, target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if layer_of(target) != layer_of(module):
                edges.setdefault(layer_of(module), set()).add(layer_of(target))
    return edges


def test_every_module_imports_only_its_layer_or_below():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent.parent))
        problems += violations(path.read_text(), rel, module_name(path), path.name == "__init__.py")
    assert not problems, "imports that go up a layer (DESIGN.md):\n" + "\n".join(problems)


def test_same_layer_packages_do_not_import_each_other_in_a_circle():
    edges = package_edges()
    for names in LAYERS:
        for a in names:
            for b in names:
                assert not (a != b and b in edges.get(a, ()) and a in edges.get(b, ())), f"{a} <-> {b}"


def test_algorithms_raise_no_user_errors():
    """Pure math knows no config keys: it raises ValueError, and the stage or the registry lookup that knows
    the key turns that into a UserError naming it."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted((PACKAGE / "algorithms").rglob("*.py"))
        if any(
            name == "r1lab.errors"
            for _, name in imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")
        )
        or "UserError" in path.read_text()
    ]
    assert not offenders, f"algorithms/ modules that import or raise UserError: {offenders}"


def test_every_package_and_module_has_a_layer():
    tops = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    tops |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops <= set(RANK), f"give these a layer in LAYERS and DESIGN.md: {sorted(tops - set(RANK))}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("r1lab.algorithms.kl", "from r1lab.errors import UserError\nimport r1lab.registry", None),
        ("r1lab.algorithms.kl", "def f():\n    from r1lab.config import RLConfig", None),
        (
            "r1lab.algorithms.kl",
            "def f():\n    from r1lab.rollout.types import Rollouts",
            "algorithms is below rollout",
        ),
        ("r1lab.eval.runner", "from r1lab import stages", "eval is below stages"),
        ("r1lab.rollout.hf", "from ..stages.rl import run_rl", "rollout is below stages"),
        ("r1lab.rollout.hf", "from .padding import left_pad", None),
        (
            "r1lab.models.load",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import r1lab.data",
            "models",
        ),
        ("r1lab.data.sft", "from r1lab.newthing import x", "'newthing' has no layer"),
    ],
)
def test_the_checker_finds_upward_imports(module, source, expected):
    """The checker itself, on known cases: lazy, relative, `from r1lab import x` and TYPE_CHECKING imports."""
    found = violations(source, "x.py", module)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found
