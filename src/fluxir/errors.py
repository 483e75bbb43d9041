"""The user-error policy shared by the ``fluxir`` command and ``python -m fluxir.stages.<name>``.

Every error a user can fix (a bad setting, a missing weight file, a broken manifest, an adapter that
does not fit its base, a service that will not start) is a :class:`UserError`. Entry points catch it
and print one line, ``fluxir <command>: error: <message>``, and exit 2; anything else is a bug and
keeps its traceback. This module imports nothing heavy, so the policy costs nothing to apply.
"""

from __future__ import annotations

import errno
import logging
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


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it masked: ``http://user:***@host/?token=***``.

    Every line the project prints, logs or records about a URI goes through this (the error line here,
    the stages' log handler, MLflow params), so a password in ``MLFLOW_TRACKING_URI`` never reaches a
    terminal, a Prefect log or a store.
    """
    return _SECRET_QUERY.sub(r"\g<head>***", _URL_USERINFO.sub(r"\g<head>:***@", text))


class RedactFilter(logging.Filter):
    """A log-handler filter that passes every record through :func:`redact` (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class UserError(Exception):
    """An error the user can fix; ``str(exc)`` is one line naming the thing and the fix."""


def path_error(exc: OSError) -> tuple[int, str] | None:
    """``(exit status, one line)`` for a file-system error on a named path, else None (a bug: traceback)."""
    known = _PATH_FIXES.get(exc.errno or 0)
    if known is None or not exc.filename:
        return None
    status, fix = known
    return status, f"{exc.filename}: {exc.strerror or type(exc).__name__}; {fix}"


def report_path_error(command: str, exc: OSError) -> int | None:
    """Print a known file-system error as the one-line error of ``command``; its status, or None."""
    known = path_error(exc)
    if known is None:
        return None
    status, line = known
    report(command, UserError(line))
    return status


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as the one-line error of ``command`` on stderr; return the exit status."""
    message = redact(" ".join(str(exc).split()))  # one line, whatever the message (or a file name) holds
    print(f"fluxir {command}: error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT
