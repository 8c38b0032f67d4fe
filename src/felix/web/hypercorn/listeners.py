"""trio's accept loop, as Hypercorn runs it: one log line a second when accept() fails.

Written against trio 0.35 (``trio/_highlevel_serve_listeners.py``), which
Hypercorn 0.18's trio worker uses through ``trio.serve_listeners``.

The defect (cost to operators): when ``accept()`` fails for want of resources
(EMFILE, ENFILE, ENOMEM, ENOBUFS: file descriptors ran out), trio logs an error
with its traceback on the ``trio.serve_listeners`` logger and tries again
0.1 s later: ten tracebacks a second for as long as the condition lasts,
burying everything else in the log.

The fix is a logging filter on that logger: the first such record in any
``interval`` seconds passes, without its traceback (it says nothing the errno
does not), and says how many were folded into it since the last line. It is
**process-wide** (trio's logger is), and changes nothing but those records:
other servers in the process get the same fewer lines. Upstream trio
(checked against 0.35) logs every retry; delete this module when it rate-limits
the message itself (``tests/web/test_stack_fixes.py::test_accept_errors_are_logged_once_a_second``
then fails for want of the count).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

__all__ = ["AcceptErrorFilter", "install", "installed"]

#: trio's logger for the accept loop.
LOGGER_NAME: Final = "trio.serve_listeners"


class AcceptErrorFilter(logging.Filter):
    """Lets one ``accept returned …`` record through per ``interval`` seconds, with a count."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._folded = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """True for the record to be logged (rewritten with the count), False to fold it."""
        if not str(record.msg).startswith("accept returned"):
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self._folded += 1
            return False
        record.msg = f"{record.getMessage()} ({self._folded} more since the last such line)"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        self._last = now
        self._folded = 0
        return True


_FILTER = AcceptErrorFilter()


def install() -> None:
    """Add the filter to trio's accept-loop logger (process-wide). Idempotent."""
    logger = logging.getLogger(LOGGER_NAME)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _FILTER in logging.getLogger(LOGGER_NAME).filters
