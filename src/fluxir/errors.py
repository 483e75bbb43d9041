"""The user-error policy shared by the ``fluxir`` command and ``python -m fluxir.stages.<name>``.

Every error a user can fix (a bad setting, a missing weight file, a broken manifest, an adapter that
does not fit its base, a service that will not start) is a :class:`UserError`. Entry points catch it
and print one line, ``fluxir <command>: error: <message>``, and exit 2; anything else is a bug and
keeps its traceback. This module imports nothing heavy, so the policy costs nothing to apply.
"""

from __future__ import annotations

import logging
import re
import sys

USER_ERROR_EXIT = 2
"""Exit status of a run stopped by a :class:`UserError`."""


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


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as the one-line error of ``command`` on stderr; return the exit status."""
    message = redact(" ".join(str(exc).split()))  # one line, whatever the message (or a file name) holds
    print(f"fluxir {command}: error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT
