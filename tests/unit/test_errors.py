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


def test_printable_escapes_what_does_not_print_and_keeps_the_rest() -> None:
    from pathlib import Path

    from fluxir.errors import printable

    assert printable("data/a\nb.png") == "data/a\\nb.png"
    assert printable("x\x1b[31m\r\t\u2028y") == "x\\x1b[31m\\r\\t\\u2028y"
    assert printable(Path("été/日本 1.png")) == "été/日本 1.png"  # letters and spaces print
    assert printable(b"bad\xff.png") == "bad\\udcff.png"  # an undecodable byte, as the OS hands it over
    assert printable("C:\\dir\\a.png") == "C:\\dir\\a.png"  # backslashes stay: a plain path reads as itself


def test_a_file_name_with_a_newline_stays_one_line_naming_it(capsys) -> None:
    name = "data/evil\nfluxir generate: error: forged.png"
    assert report_path_error("generate", PermissionError(errno.EACCES, "Permission denied", name)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("error:") == 2  # the forged text is inside the one line
    assert err.startswith(
        "fluxir generate: error: data/evil\\nfluxir generate: error: forged.png: Permission"
    )


def test_an_environment_failure_is_one_line_with_exit_status_1(capsys) -> None:
    from fluxir.errors import ENVIRONMENT_EXIT, EnvironmentFailure, UserError, report

    assert report("train", EnvironmentFailure("MLflow at http://u:pw@h:1 did not answer;\nstart it")) == 1
    assert report("train", UserError("x")) == 2 and ENVIRONMENT_EXIT == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "fluxir train: error: MLflow at http://u:***@h:1 did not answer; start it"
    # every entry point that catches UserError prints it
    assert isinstance(EnvironmentFailure("x"), UserError)


def test_log_records_are_one_line_whatever_a_name_holds(capsys) -> None:
    import logging

    from fluxir.errors import RedactFilter

    logger = logging.getLogger("fluxir.test-one-line")
    handler = logging.StreamHandler()
    handler.addFilter(RedactFilter())
    logger.addHandler(handler)
    # only this handler: one an earlier test left on "fluxir" or the root may hold a stream closed since
    logger.propagate = False
    try:
        logger.warning("rejected %s: %s", "a\nb\x1b.png", "not an image")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert capsys.readouterr().err == "rejected a\\nb\\x1b.png: not an image\n"
