"""Imports point down only. The layers, lowest first (the architecture doc, docs/architecture.md, draws the same):

    ops, losses, advantages  ->  data, runtime, config  ->  models  ->  eval  ->  algorithms  ->  pipeline
    ->  demo, annotate, serve  ->  cli

A module may import from its own layer and the layers below; a higher layer passes hooks down (the pipeline takes a
ranker and a judge, the demo supplies simulated ones), never the reverse. Every import counts, including those
inside functions (the CLI imports lazily).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "src" / "rlhfkit"
LAYERS = [
    {"ops", "losses", "advantages"},
    {"data", "runtime", "config"},
    {"models"},
    {"eval"},
    {"algorithms"},
    {"pipeline"},
    {"demo", "annotate", "serve"},
    {"cli"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def top_level(module: str) -> str | None:
    """rlhfkit.models.load -> models; other packages -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "rlhfkit" and len(parts) > 1 else None


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported rlhfkit module) for every import in the file, relative imports resolved."""
    package = ".".join(("rlhfkit", *path.relative_to(root).with_suffix("").parts[:-1]))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from rlhfkit import pipeline`, `from .. import config`: each name is a module of the package
            names_are_modules = not node.module or base == "rlhfkit"
            found += [(node.lineno, f"{base}.{alias.name}" if names_are_modules else base) for alias in node.names]
    return found


def back_edges(root: Path = PACKAGE) -> list[str]:
    edges = []
    for path in sorted(root.rglob("*.py")):
        own = path.relative_to(root).parts[0].removesuffix(".py")
        if own not in RANK:
            continue  # __init__.py of the package
        for line, module in imports_of(path, root):
            target = top_level(module)
            if target in RANK and RANK[target] > RANK[own]:
                edges.append(f"{path.relative_to(root)}:{line}: {own} imports {module} ({target} is a higher layer)")
    return edges


def test_every_package_module_has_a_layer():
    names = {
        p.name.removesuffix(".py")
        for p in PACKAGE.iterdir()
        if p.name != "__init__.py" and not p.name.startswith(("_", "."))
    }
    assert names <= set(RANK), f"give these a layer in LAYERS and docs/architecture.md: {sorted(names - set(RANK))}"


def test_imports_point_down_only():
    assert back_edges() == []


@pytest.mark.parametrize(
    "source",
    [
        "from rlhfkit.models.load import load_tokenizer\n",  # data -> models
        "def f():\n    from rlhfkit.pipeline import run_pipeline\n",  # lazily, inside a function
        "import rlhfkit.algorithms.ppo\n",
        "from ..models import load\n",  # relative
        "from rlhfkit import pipeline\n",  # a module named after `import`
    ],
)
def test_a_back_edge_is_caught(tmp_path, source):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text(source)
    assert len(back_edges(tmp_path)) == 1


def drawn_layers(doc: Path = PACKAGE.parents[1] / "docs" / "architecture.md") -> list[set[str]]:
    """The layers of the drawing under "## Layers" in the architecture doc, lowest first (it draws them top down:
    one row of names joined by "·", then two or more spaces and the description; "│" rows are the arrows)."""
    section = doc.read_text(encoding="utf-8").split("\n## Layers\n", 1)[1]
    block = section.split("```", 2)[1]
    rows = [line.strip() for line in block.splitlines()[1:]]
    names = [re.split(r"\s{2,}", row)[0] for row in rows if row and not row.startswith("│")]
    return [{n.strip() for n in row.split("·")} for row in reversed(names)]


def test_the_architecture_doc_draws_the_same_layers():
    assert drawn_layers() == LAYERS
