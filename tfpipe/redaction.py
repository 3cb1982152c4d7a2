"""Keeps secrets out of what we print, write and tag: credentials in a URI (MLFLOW_TRACKING_URI's
`https://user:password@host`, a token in a query) become `***`. Reads and writes nothing.

`redact` is applied where an error's text meets a file, a tag or a message (evaluate's gate reasons and
blessing.json, export's reasons, predict's errors, the tracking errors); `install` (called by `pipelines/__init__.py`,
so by every entry point) also redacts uncaught tracebacks and every log record, which is where a library's own
message would otherwise carry the URI out.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback

# scheme://userinfo@ ; userinfo is a user, a user:password, or a bare token
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
# ?token=... &password=... &access_key=... in a URL's query
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|access_key|sig|signature)=)"
    r"(?P<value>[^&;\s'\"]+)",
    re.IGNORECASE,
)
MASK = "***"


def redact(text) -> str:
    """text with URI credentials replaced by *** (the user name is a credential too: it goes as well)."""
    text = str(text)
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda match: f"{match['key']}{MASK}", text)


def _redacted_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message (arguments formatted first) redacted, whichever logger and handler it goes to."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001  a record that cannot format is left to logging's own error handling
        return record
    redacted = redact(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    return record


def _excepthook(kind, value, trace) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, trace))))


def install() -> None:
    """Redacts uncaught tracebacks and every log record of this process, whatever logger or handler writes it
    (a record factory: idempotent)."""
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def redacting_factory(*args, **kwargs):
        return _redacted_record(factory(*args, **kwargs))

    redacting_factory.redacts = True
    logging.setLogRecordFactory(redacting_factory)
