"""fluxir.orchestration.dvc: params written like `dvc exp run -S`, commands and their errors, profiles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fluxir.config import ConfigError, load_config
from fluxir.orchestration import dvc as orchestrate

REPO = Path(__file__).resolve().parents[2]


def test_set_params_keeps_comments_and_validates(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    orchestrate.set_params(params, {"generate.num_images": 16, "train.val_timesteps": [0.5]})
    text = params.read_text()
    assert "num_images: 16" in text and "# paper: 350000" in text
    cfg = load_config(params)
    assert cfg.generate.num_images == 16 and cfg.train.val_timesteps == [0.5]

    before = params.read_bytes()
    with pytest.raises(ConfigError, match="generate.num_images"):
        orchestrate.set_params(params, {"generate.num_images": -3})
    with pytest.raises(ConfigError, match="no section 'nosuch'"):
        orchestrate.set_params(params, {"nosuch.key": 1})
    assert params.read_bytes() == before, "a rejected override leaves the file as it was"
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_profiles_load_as_overrides_of_params_yaml():
    # The profiles and params.yaml are generated from the schema (tests/unit/test_config_defaults.py).
    tiny = orchestrate.load_overrides(REPO / "configs" / "profiles" / "tiny.yaml")
    paper = orchestrate.load_overrides(REPO / "configs" / "profiles" / "paper.yaml")
    assert set(tiny) == set(paper)
    assert load_config(REPO / "params.yaml", tiny) == load_config(REPO / "params.yaml")
    cfg = load_config(REPO / "params.yaml", paper)
    assert cfg.generate.num_images == 350_000 and cfg.train.lr == 1e-5


def test_run_command_streams_lines_and_names_the_error(tmp_path):
    seen = []
    code = "import sys\nprint('step 1')\nprint('fluxir filter: error: row 3 fails', file=sys.stderr)\nsys.exit(2)"
    with pytest.raises(orchestrate.CommandError) as info:
        orchestrate.run_command([sys.executable, "-c", code], tmp_path, on_line=seen.append)
    assert seen == ["step 1", "fluxir filter: error: row 3 fails"]
    assert info.value.returncode == 2
    assert str(info.value).endswith("exited with 2: fluxir filter: error: row 3 fails")


@pytest.mark.parametrize(
    "lines, expected",
    [
        (
            ["ERROR: failed to reproduce 'filter'", "fluxir filter: error: bad row"],
            "fluxir filter: error: bad row",
        ),
        (
            ["Traceback (most recent call last):", '  File "x"', "KeyError: 'id'", "ERROR: failed"],
            "KeyError: 'id'",
        ),
        (["ok", "ERROR: failed to reproduce 'x'"], "ERROR: failed to reproduce 'x'"),
        (["killed"], "killed"),
        ([], "no output"),
    ],
)
def test_error_line(lines, expected):
    assert orchestrate.error_line(lines) == expected


def test_set_option_round_trips_through_parse_override():
    from fluxir.config import parse_override

    for value in (4, 0.5, "data/x", [[96, 128], [96, 96]], {"a": [1, 2]}, True, ""):
        assert parse_override(orchestrate.set_option("k.v", value)) == ("k.v", value)
