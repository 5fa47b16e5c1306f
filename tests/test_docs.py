"""The docs: every page's Python examples run (and check what they show), and the site builds strictly.

Each page's ```python blocks run in order in one namespace, from the repository root (the examples
open ``studies/`` and ``search_spaces/`` files by relative path). Every page that has examples
is found on its own, so a new page's examples are run without being listed here.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")) + ["../README.md"]
PYTHON = re.compile(r"```python\n(.*?)```", flags=re.S)
# pages whose examples do not assert yet: skipped until they do (then they are held to it; drop them here)
NOT_ASSERTING_YET: set[str] = set()


def blocks(page: str) -> list[str]:
    return PYTHON.findall((DOCS / page).read_text())


EXAMPLE_PAGES = [p for p in PAGES if blocks(p)]


def test_the_pages_with_examples_are_found():
    assert {"getting-started.md", "data.md", "training.md", "affinity.md", "topologies.md", "weighting.md",
            "studies.md", "dashboard.md", "../README.md"} <= set(EXAMPLE_PAGES)


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_page_examples_run(page, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": f"docs:{page}"}
    for block in blocks(page):
        exec(compile(block, page, "exec"), namespace)


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_page_examples_check_what_they_show(page):
    asserts = sum(len(re.findall(r"^\s*assert\b", b, flags=re.M)) for b in blocks(page))
    if page in NOT_ASSERTING_YET and asserts == 0:
        pytest.skip(f"{page}: its examples do not assert yet")
    assert asserts >= 1, f"{page}: its examples run but check nothing (no assert)"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs and mkdocstrings are not installed (pip install -e '.[docs]')")
def test_the_site_and_its_api_reference_build_strictly(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    api = (site / "api" / "pipeline" / "index.html").read_text()
    assert 'id="taskgraph.pipeline.auto_group"' in api  # generated from the docstrings
    assert "&gt;&gt;&gt;" in api and "Examples" in api  # doctests render as examples, not as markdown text
    for page in ("getting-started", "data", "architecture", "api/grouping", "api/affinity"):
        assert (site / page / "index.html").exists(), page


def _layers() -> list[set[str]]:
    """The ```layers block of docs/architecture.md: one set of packages per line, top first."""
    block = re.search(r"```layers\n(.*?)```", (DOCS / "architecture.md").read_text(), flags=re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return [{p.strip() for p in line.split(",")} for line in block.group(1).splitlines() if line.strip()]


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(module, line)`` of every import in a file, those inside functions included, those under
    ``if TYPE_CHECKING:`` not (they only serve annotations)."""
    import ast

    rel = path.relative_to(ROOT).with_suffix("")
    package = ".".join(rel.parts[:-1])  # the package a relative import starts from (also for __init__.py)
    out: list[tuple[str, int]] = []

    def visit(node) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "taskgraph":
                out.extend((f"taskgraph.{a.name}", node.lineno) for a in node.names)
            else:
                out.append((module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def test_architecture_layers_are_the_codes():
    layers = _layers()
    level = {name: i for i, line in enumerate(layers) for name in line}
    units = {p.stem if p.suffix else p.name for p in (ROOT / "taskgraph").iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem not in ("__init__", "__main__")}
    assert set(level) == units, f"architecture.md's layers must name every package once: {set(level) ^ units}"
    wrong = []
    for path in sorted((ROOT / "taskgraph").rglob("*.py")):
        parts = path.relative_to(ROOT / "taskgraph").with_suffix("").parts
        unit = parts[0]
        if unit in ("__init__", "__main__"):
            continue
        for module, line in _imports(path):
            target = module.split(".")
            if target[0] != "taskgraph" or len(target) < 2 or target[1] == unit:
                continue
            if level[target[1]] <= level[unit]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} {unit} imports {target[1]}")
    assert wrong == [], "imports that do not run down the layers of docs/architecture.md:\n" + "\n".join(wrong)
