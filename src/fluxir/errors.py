"""The user-error policy shared by the ``fluxir`` command and ``python -m fluxir.stages.<name>``.

Every error a user can fix (a bad setting, a missing weight file, a broken manifest, an adapter that
does not fit its base, a service that will not start) is a :class:`UserError`. Entry points catch it
and print one line, ``fluxir <command>: error: <message>``, and exit 2; anything else is a bug and
keeps its traceback. This module imports nothing heavy, so the policy costs nothing to apply.
"""

from __future__ import annotations

import sys

USER_ERROR_EXIT = 2
"""Exit status of a run stopped by a :class:`UserError`."""


class UserError(Exception):
    """An error the user can fix; ``str(exc)`` is one line naming the thing and the fix."""


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as the one-line error of ``command`` on stderr; return the exit status."""
    message = " ".join(str(exc).split())  # one line, whatever the message (or a file name) holds
    print(f"fluxir {command}: error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT
