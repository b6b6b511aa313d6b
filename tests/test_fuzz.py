"""Fuzzing: no config file, flag value or input text makes nanogpt fail with anything but
its own clear error."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt_cli.cli.app import main
from nanogpt_cli.config import GROUP_TITLES, build_config, option_specs, read_config_file
from nanogpt_cli.errors import ConfigError, DatasetError

NAMES = [spec.name for spec in option_specs()]
FLAGS = [spec.flag for spec in option_specs()]
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
keys = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))


def toml_value(value: Any) -> str:
    """A TOML literal for what hypothesis drew (a small writer: no TOML writer ships with
    Python)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


@FUZZ
@given(text=st.text(max_size=200))
def test_any_config_text_is_read_or_refused_clearly(text: str, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        build_config(None, path)


@FUZZ
@given(
    table=st.dictionaries(keys, values, max_size=6),
    group=st.one_of(st.none(), st.sampled_from(list(GROUP_TITLES))),
)
def test_any_config_table_is_read_or_refused_clearly(
    table: dict[str, Any], group: str | None, tmp_path: Path
) -> None:
    lines = [f"[{group}]"] if group else []
    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    path = tmp_path / "fuzz.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        values, problems = read_config_file(path)
        cfg = build_config(None, path)
    except ConfigError:
        return
    assert not problems and set(values) <= set(NAMES)
    assert cfg.flat().keys() == set(NAMES)


@FUZZ
@given(flag=st.sampled_from(FLAGS), value=st.text(max_size=30))
def test_any_flag_value_is_taken_or_refused_in_one_line(flag: str, value: str) -> None:
    if value.startswith("-"):
        value = " " + value  # a value, not another option
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exit_info,
    ):
        main(["train", flag, value, "--print-config"])
    code = exit_info.value.code
    assert code in (0, 1, 2), err.getvalue()
    if code:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    else:
        assert "[model]" in out.getvalue()  # the resolved config was printed


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    tokenizer=st.sampled_from(["char", "gpt2"]),
    jsonl=st.booleans(),
)
def test_any_input_text_is_prepared_or_refused_clearly(
    data: bytes, tokenizer: str, jsonl: bool, tmp_path: Path, gpt2_bpe: Path
) -> None:
    from nanogpt_cli.data.prepare import prepare_text

    path = tmp_path / ("input.jsonl" if jsonl else "input.txt")
    path.write_bytes(data)
    try:
        result = prepare_text(
            [path], tokenizer=tokenizer, data_dir=tmp_path / "data", force=True, num_proc=1
        )
    except DatasetError:
        return
    assert sum(s.tokens for s in result.splits.values()) > 0
