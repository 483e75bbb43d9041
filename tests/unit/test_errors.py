"""File-system errors on a named path are one line: exit 2 for the user's path, 1 for the machine."""

from __future__ import annotations

import errno

from fluxir.errors import path_error, report_path_error


def test_known_path_errors_are_one_line_with_a_fix(capsys) -> None:
    status, line = path_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "data/afile/x.png"))
    assert status == 2 and line.startswith("data/afile/x.png: Not a directory;")
    assert path_error(OSError(errno.ENOSPC, "No space left on device", "data/a.png"))[0] == 1
    assert path_error(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/a.png"))[0] == 1
    assert report_path_error("generate", PermissionError(errno.EACCES, "Permission denied", "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fluxir generate: error: out: Permission denied; no permission; choose a folder you can write or fix its permissions"
    ]


def test_other_os_errors_stay_bugs() -> None:
    assert path_error(OSError(errno.ENOTDIR, "Not a directory")) is None  # no path named
    assert path_error(ConnectionResetError(errno.ECONNRESET, "reset", "x")) is None
