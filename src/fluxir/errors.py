"""The user-error policy shared by the ``fluxir`` command and ``python -m fluxir.stages.<name>``.

Every error a user can fix (a bad setting, a missing weight file, a broken manifest, an adapter that
does not fit its base, a service that will not start) is a :class:`UserError`. Entry points catch it
and print one line, ``fluxir <command>: error: <message>``, and exit with its ``exit_status``: 2 for the
input, 1 for an :class:`EnvironmentFailure` (the machine or a service it needs, e.g. an MLflow server that
does not answer); anything else is a bug and keeps its traceback. A name from the outside world (a file
name, a URI) goes into a line through :func:`printable`, so a newline or a terminal escape in it cannot
break the line or the terminal. This module imports nothing heavy, so the policy costs nothing to apply.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys

USER_ERROR_EXIT = 2
"""Exit status of a run stopped by a :class:`UserError`."""
ENVIRONMENT_EXIT = 1
"""Exit status of a run stopped by its environment (a full disk, a read-only file system)."""

# File-system errors on a path the user chose are the user's to fix (exit 2); a full disk or a read-only
# mount is the machine's (exit 1). Either way they are one line naming the path, not a traceback.
_PATH_FIXES = {
    errno.ENOTDIR: (
        USER_ERROR_EXIT,
        "a file stands where a folder is needed; choose another path or move the file",
    ),
    errno.EISDIR: (USER_ERROR_EXIT, "a folder stands where a file is needed; choose another path"),
    errno.EEXIST: (USER_ERROR_EXIT, "something already exists there; choose another path or move it"),
    errno.EACCES: (USER_ERROR_EXIT, "no permission; choose a folder you can write or fix its permissions"),
    errno.EPERM: (USER_ERROR_EXIT, "not permitted; choose a folder you can write or fix its permissions"),
    errno.EROFS: (ENVIRONMENT_EXIT, "the file system is read-only; choose a writable folder"),
    errno.ENOSPC: (ENVIRONMENT_EXIT, "the disk is full; free space and rerun (finished files are kept)"),
    errno.EDQUOT: (
        ENVIRONMENT_EXIT,
        "the disk quota is exceeded; free space and rerun (finished files are kept)",
    ),
}


_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^/\s:@]*):[^/\s@]*@")
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&;](?:[\w.-]*(?:password|passwd|pwd|secret|token|signature|credential|api[_-]?key|access[_-]?key)"
    r"[\w.-]*)=)[^&#\s]*",
    re.IGNORECASE,
)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` (a path, a name) with every character that does not print escaped as ``repr`` escapes it.

    ``a\\nb.png`` stays one line and says what the name is; ESC and other control characters cannot
    reach the terminal; characters that print (``é``, ``日本``) are kept. Unlike ``repr``, backslashes and
    quotes are left as they are, so a plain path reads as itself.
    """
    # a bytes or PathLike name is decoded as the OS does: undecodable bytes become surrogates, escaped below
    text = os.fsdecode(text) if isinstance(text, bytes | os.PathLike) else str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def one_line(text: str) -> str:
    """A message as one line: runs of whitespace (newlines included) become one space, other control
    characters are escaped (:func:`printable`)."""
    return printable(" ".join(str(text).split()))


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it masked: ``http://user:***@host/?token=***``.

    Every line the project prints, logs or records about a URI goes through this (the error line here,
    the stages' log handler, MLflow params), so a password in ``MLFLOW_TRACKING_URI`` never reaches a
    terminal, a Prefect log or a store.
    """
    return _SECRET_QUERY.sub(r"\g<head>***", _URL_USERINFO.sub(r"\g<head>:***@", text))


class RedactFilter(logging.Filter):
    """A log-handler filter that passes every record through :func:`redact` (message and arguments) and
    :func:`printable` (a record is one line: a newline in a file name shows as ``\\n``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = printable(redact(message))  # one line per record, whatever a file name in it holds
        if masked != message:
            record.msg, record.args = masked, None
        return True


class UserError(Exception):
    """An error the user can fix; ``str(exc)`` is one line naming the thing and the fix."""

    exit_status = USER_ERROR_EXIT


class EnvironmentFailure(UserError):
    """The machine or a service the run needs stopped it, not its input (an MLflow server that does not
    answer): the same one line, exit status 1."""

    exit_status = ENVIRONMENT_EXIT


def path_error(exc: OSError) -> tuple[int, str] | None:
    """``(exit status, one line)`` for a file-system error on a named path, else None (a bug: traceback)."""
    known = _PATH_FIXES.get(exc.errno or 0)
    if known is None or not exc.filename:
        return None
    status, fix = known
    return status, f"{printable(exc.filename)}: {exc.strerror or type(exc).__name__}; {fix}"


def report_path_error(command: str, exc: OSError) -> int | None:
    """Print a known file-system error as the one-line error of ``command``; its status, or None."""
    known = path_error(exc)
    if known is None:
        return None
    status, line = known
    report(command, UserError(line))
    return status


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as the one-line error of ``command`` on stderr; return its exit status (2 unless the
    error says otherwise: :class:`EnvironmentFailure` is 1)."""
    message = one_line(redact(str(exc)))  # one line, whatever the message (or a file name) holds
    print(f"fluxir {command}: error: {message}", file=sys.stderr)
    return getattr(exc, "exit_status", USER_ERROR_EXIT)
