"""Whatever value a config file or the environment gives any setting, start-up
either gets a config or stops with problems that name the file (or the
variable) and the key: never another exception, never a nameless message.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from gw_config import BASE, write_config_files
from gw_example import EXAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import to_toml
from gateway.config import ConfigError, dump_config, load_config


def _leaves(
    table: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += _leaves(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


KEYS = _leaves(dump_config(load_config(EXAMPLE, environ={})))
_SCALARS = st.one_of(
    st.integers(),
    st.integers(-2, 70_000),
    st.floats(),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(
        ("", ".", "/", "cert.pem", "secret", "0", "-1", "127.0.0.1", "::1", "tls")
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abcxyz_", min_size=1, max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)


@pytest.fixture(scope="module")
def cfgdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config_files(tmp_path_factory.mktemp("cfg"))


def _canon(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    table = raw
    for part in path[:-1]:
        nested = table.get(part)
        if not isinstance(nested, dict):
            nested = table[part] = {}
        table = nested
    table[path[-1]] = value


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from(KEYS), _VALUES, min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(KEYS), st.text(max_size=20), max_size=2),
)
def test_any_value_loads_or_is_refused_by_name(
    cfgdir: Path, values: dict[tuple[str, ...], Any], env: dict[tuple[str, ...], str]
) -> None:
    raw = tomllib.loads(BASE)
    for key, value in values.items():
        _set(raw, key, value)
    text = to_toml(raw)
    # check-config's TOML reads back as the same data (NaN included)
    assert _canon(tomllib.loads(text)) == _canon(raw)
    path = cfgdir / "voipgw.toml"
    path.write_text(text)
    environ = {"VOIPGW_" + "__".join(k).upper(): v for k, v in env.items()}
    try:
        load_config(path, environ=environ)
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            named = problem.startswith(f"{path}: ") or any(
                problem.startswith(f"{var}: ") for var in environ
            )
            assert named, problem
            assert problem.split(": ", 2)[1], problem  # the key
