"""The controller's log lines: the search and trial on every line, as text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
import sys

# Line breaks and other control characters in a message (a trial's error text, a record's field) would let whoever
# wrote that text forge lines of the operator's log.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


class _Context(logging.Filter):
    """Puts the search name and, for "trial N: ..." lines, the trial id on every record."""

    def __init__(self, search: str):
        super().__init__()
        self.search = search

    def filter(self, record: logging.LogRecord) -> bool:
        record.search = self.search
        tid = None
        if isinstance(record.msg, str) and record.msg.startswith("trial %d") and record.args:
            tid = record.args[0] if isinstance(record.args, tuple) else None
        record.tid = tid
        record.trial = f" trial={tid}" if tid is not None else ""
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": record.created, "level": record.levelname, "logger": record.name,
               "search": getattr(record, "search", None), "msg": record.getMessage()}
        tid = getattr(record, "tid", None)  # set by _Context on "trial N: ..." lines
        if tid is not None:
            doc["tid"] = tid
        return json.dumps(doc)


class _TextFormatter(logging.Formatter):
    """One line per record: control characters in the message escaped (a traceback still follows on its own
    lines: the operator's, not text it read)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


def escape(text: str) -> str:
    """text with its control characters written as Python escapes (\\n, \\x1b)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def setup_logging(fmt: str, verbose: bool, search: str = "-") -> None:
    """The process's one log handler (stderr): text or json, DEBUG with --verbose, third parties at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(search))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter(
            "%(asctime)s %(levelname)s search=%(search)s%(trial)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "hyperopt", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
