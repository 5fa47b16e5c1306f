"""The docs' Python examples run as tests (pages listed here; each block runs in one namespace)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["getting-started.md", "data.md", "topologies.md", "weighting.md", "grouping.md", "quality.md", "../README.md"]


def blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page):
    code = blocks(page)
    assert code, f"{page} has no python example"
    namespace: dict = {}
    for block in code:
        exec(compile(block, f"{page}", "exec"), namespace)
