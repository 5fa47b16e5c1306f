"""docs/affinity.md's Python examples run (in one namespace, in order)."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[3] / "docs" / "affinity.md"


def test_affinity_page_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    assert namespace["graph"].names == ("t0", "t1", "t2", "t3")
