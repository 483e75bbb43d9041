"""Every way a params file or a --set value can be unusable is one ConfigError line, and answered fast."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluxir.config import (
    Config,
    ConfigError,
    DegradeConfig,
    RestoreConfig,
    config_from_dict,
    load_config,
    parse_override,
)


def write(tmp_path: Path, data: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def one_line_error(call) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_check_on_a_bad_file_is_one_line_without_torch(tmp_path):
    bad = write(tmp_path, "model:\n  tiny_seed: seven\n")
    code = (
        "import sys\nfrom fluxir.cli import main\n"
        f"rc = main(['config', 'check', '--params', {str(bad)!r}])\n"
        "print('torch' in sys.modules)\nsys.exit(rc)\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - start
    assert done.returncode == 2
    assert done.stdout.strip() == "False", "fluxir config check imported torch"
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["fluxir config: error: model.tiny_seed='seven': must be an integer"]
    assert seconds < 5, f"config check took {seconds:.1f} s (it imports no model code; ~0.4 s on an idle CPU)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"model:\n  base: \xff\xfe\n",
            r"params.yaml: not UTF-8 text \(byte 0xff on line 2\); save it as UTF-8$",
        ),
        ("", "params.yaml: the params file is empty"),
        ("# only a comment\n", "params.yaml: the params file is empty"),
        (
            "model:\n  base: tiny\n  base: other\n",
            "params.yaml: line 3: key 'base' is set twice in one mapping",
        ),
        ("model: {}\nmodel: {}\n", r"line 2: key 'model' is set twice in one mapping \(first on line 1\)$"),
        ("train:\n  lr: .nan\n", r"^train.lr=nan: must be a finite number \(not NaN or inf\)$"),
        ("train:\n  logit_mean: .inf\n", r"^train.logit_mean=inf: must be a finite number"),
        (
            "train:\n  val_timesteps: [0.5, -.inf]\n",
            r"^train.val_timesteps\[1\]=-inf: must be a finite number",
        ),
        ("model:\n  base: [unclosed\n", r"params.yaml: line 3 is not valid YAML"),
        ("filter:\n  keep_quantile: true\n", r"^filter.keep_quantile=True: must be a number$"),
        ("filter:\n  keep_quantile: '0.9'\n", r"^filter.keep_quantile='0.9': must be a number$"),
        ("filter:\n  keep_quantile: 2\n", r"^filter.keep_quantile=2.0: must be in \(0, 1\]$"),
        ("filter:\n  enabled: 1\n", r"^filter.enabled=1: must be true or false$"),
        ("train:\n  rank: high\n", r"^train.rank='high': must be an integer or null$"),
        ("train:\n  adam_betas: [0.9, 1]\n", r"^train.adam_betas=\[0.9, 1.0\]: must be in \[0, 1\)$"),
        ("train:\n  adam_betas: 0.9\n", r"^train.adam_betas=0.9: must be a list of numbers$"),
        ("degrade:\n  sizes: [[96, '128']]\n", r"^degrade.sizes\[0\]\[1\]='128': must be an integer$"),
        ("score:\n  device: tpu\n", r"^score.device='tpu': must be 'auto', 'cpu', 'cuda' or 'cuda:N'$"),
        ("score:\n  metrics: []\n", r"^score.metrics=\[\]: must name at least one pyiqa metric"),
        (
            "benchmark:\n  datasets: [{name: A, colour: red}]\n",
            r"^benchmark.datasets\[0\].colour: unknown key; allowed keys are name, kind, hq_dir, lq_dir,",
        ),
        ("degrade:\n  overrides: [1]\n", r"^degrade.overrides=\[1\]: must be a mapping of keys to values$"),
    ],
)
def test_unusable_files_fail_with_one_line(tmp_path, data, message):
    import re

    text = one_line_error(lambda: load_config(write(tmp_path, data)))
    assert re.search(message, text), text


def test_a_section_with_nothing_under_it_keeps_its_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "model:\ndegrade:\n  overrides:\n"))
    assert cfg.model == Config().model and cfg.degrade == DegradeConfig()
    assert load_config(write(tmp_path, "model:\n"), {"model.tiny_seed": 3}).model.tiny_seed == 3


def test_numbers_are_typed_as_the_schema_says(tmp_path):
    cfg = load_config(write(tmp_path, "filter:\n  keep_quantile: 1\ntrain:\n  rank: null\n"))
    assert cfg.filter.keep_quantile == 1.0 and isinstance(cfg.filter.keep_quantile, float)
    assert cfg.train.rank is None


def test_set_values_are_yaml_and_their_errors_are_one_line(tmp_path):
    assert parse_override("train.adam_betas=[0.9, 0.99]") == ("train.adam_betas", [0.9, 0.99])
    text = one_line_error(lambda: parse_override("degrade.sizes=[[96, 128]"))
    assert text.startswith("--set degrade.sizes: line 1 is not valid YAML")
    text = one_line_error(lambda: parse_override("degrade.overrides={gt_usm: true, gt_usm: false}"))
    assert (
        text == "--set degrade.overrides: line 1: key 'gt_usm' is set twice in one mapping (first on line 1)"
    )
    path = write(tmp_path, "model:\n  base: tiny\n")
    key, value = parse_override("train.lr=.nan")
    assert one_line_error(lambda: load_config(path, {key: value})).startswith(
        "train.lr=nan: must be a finite"
    )


def test_sections_built_in_code_are_validated_the_same_way():
    assert one_line_error(lambda: RestoreConfig(tile=10)) == "restore.tile=10: must be in [16, inf)"
    assert one_line_error(lambda: RestoreConfig(steps="4")) == "restore.steps='4': must be an integer"
    assert one_line_error(lambda: RestoreConfig(tile=64, overlap=64)).startswith(
        "restore.overlap=64: must be smaller"
    )
    assert one_line_error(lambda: DegradeConfig(colour=1)).startswith(
        "degrade.colour: unknown key; allowed keys are"
    )
    degrade = DegradeConfig()
    assert dataclasses.replace(degrade, sizes=[[64, 64]]).sizes == [[64, 64]]
    assert one_line_error(lambda: dataclasses.replace(degrade, sizes=[[66, 64]])).startswith(
        "degrade.sizes[0]="
    )


def test_configs_are_values():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.base = "other"  # type: ignore[misc]
    assert config_from_dict({"model": {"base": "x"}}) != cfg
