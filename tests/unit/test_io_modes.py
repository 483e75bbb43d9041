"""Files the project writes get the mode a plain ``open()`` would (the umask's), not tempfile's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from fluxir.io import write_bytes_atomic


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    os.umask(previous)
    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_an_atomic_write_follows_the_umask(tmp_path, umask, mask, expected) -> None:
    umask(mask)
    path = write_bytes_atomic(tmp_path / "out.bin", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == expected
    with open(tmp_path / "plain.bin", "wb") as f:  # what a plain open() gives: the reference
        f.write(b"x")
    assert stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == expected


def test_an_explicit_mode_wins_over_the_umask(tmp_path, umask) -> None:
    umask(0o022)
    path = write_bytes_atomic(tmp_path / "secret.json", b"{}", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
