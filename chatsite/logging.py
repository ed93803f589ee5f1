"""Log records as JSON lines: one object per line, for `docker compose logs` and collectors.

Every line has `time` (UTC, ISO 8601), `level`, `logger` and `message`; fields passed with
`logger.info("...", extra={"room": "general"})` are added beside them, and a traceback goes in
`exc_info` as one string, so a record never spans two lines.
"""

import json
import logging
from datetime import UTC, datetime

# What every LogRecord carries; anything else on a record came from `extra=` and becomes a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: Django attaches objects (the request, the socket) to some records.
        return json.dumps(entry, default=str, ensure_ascii=False)
