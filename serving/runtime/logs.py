"""How the service's own log lines look and how many there are: ``--log-level`` / ``MEDIROUND_LOG_LEVEL``
(INFO by default) for the product's loggers (``serving.*``, ``model.*``), WARNING for every library's; plain text
or one JSON object a line (``--log-format json``, for a cluster's log collector), on stderr.

The audit log (``mediround.audit``) keeps its own stream (``serving.cli``). The rule for every line stays: no
patient data, UIDs, addresses or secrets in a message.
"""

from __future__ import annotations

import json
import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
PRODUCT_LOGGERS = ("serving", "model")


class JsonLines(logging.Formatter):
    """One JSON object a record: time (ISO 8601, UTC), level, logger, message (and the exception's type, never
    its text or traceback: they may carry what a request held)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        import datetime

        return datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send the product's records at ``level`` and up, and every other logger's warnings, to stderr as ``fmt``."""
    level, fmt = level.upper(), fmt.lower()
    if level not in LEVELS:
        raise ValueError(f"the log level must be one of {', '.join(LEVELS)}; got '{level}'")
    if fmt not in FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(FORMATS)}; got '{fmt}'")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in PRODUCT_LOGGERS:
        logging.getLogger(name).setLevel(level)
