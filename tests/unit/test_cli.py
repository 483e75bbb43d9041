"""The command line: help lists every command; user errors print one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fluxir.cli import COMMANDS, main


def test_help_lists_every_command_with_its_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name, (_, help_text) in COMMANDS.items():
        assert name in out and help_text.split()[0] in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert f"usage: fluxir {name}" in capsys.readouterr().out


def test_help_does_not_import_torch():
    code = "import sys; from fluxir.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_build_tiny_then_check(tmp_path, capsys):
    assert main(["models", "build-tiny", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert main(["models", "check", str(tmp_path / "m")]) == 0
    assert "1 double + 1 single blocks" in capsys.readouterr().out


def test_bad_params_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  dtype: fp4\n")
    assert main(["config", "check", "--params", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fluxir config: error: model.dtype='fp4': must be one of 'float32', 'bfloat16', 'float16'"
