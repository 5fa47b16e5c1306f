"""A NUL character in any string of a study file is a one-line ConfigError naming the key (the fuzz test
found `search.space = "\\u0000"` ending in the OS's ValueError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskgraph.exceptions import ConfigError
from taskgraph.search import StudySpec

STUDY = Path(__file__).parents[3] / "studies" / "planted-clusters.toml"


@pytest.mark.parametrize(("old", "new", "key"), [
    ('space = "../search_spaces/default.toml"', 'space = "\\u0000"', "search.space"),
    ('name = "planted-clusters"\nseed', 'name = "a\\u0000b"\nseed', "name"),
    ('sampler = "tpe"', 'sampler = "tpe\\u0000"', "search.sampler"),
])
def test_a_nul_character_in_a_string_is_refused_with_its_key(tmp_path, old, new, key):
    space = STUDY.parents[1] / "search_spaces" / "default.toml"
    text = STUDY.read_text()
    assert text.count(old) == 1
    text = text.replace(old, new).replace("../search_spaces/default.toml", str(space))  # read from tmp_path
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must not contain a NUL character") as err:
        StudySpec.load(path)
    assert err.value.key == key and str(path) in str(err.value)
