"""Log output per the ``[log]`` section: text or JSON lines, by level.

twistd picks its observer before the gateway could, so the ``[log]`` section
takes effect when twistd is started with ``--logger gateway.logging.observer``
(as the systemd unit in ``etc/`` does); ``makeService`` records the section
here first. Without ``--logger`` twistd's own text log to stdout is used.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsText,
    formatEvent,
)
from zope.interface import implementer

from gateway.config import LogConfig

__all__ = ["LineObserver", "configure", "debug_enabled", "make_observer", "observer"]

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
_current = LogConfig()


def configure(config: LogConfig) -> None:
    """Remember the ``[log]`` section for ``observer()``."""
    global _current  # noqa: PLW0603 - twistd asks for the observer without context
    _current = config


def debug_enabled() -> bool:
    """Whether the ``[log]`` section asks for debug events.

    Twisted builds and publishes every event before an observer drops it by
    level (about 6 us); code that would log at debug per request checks
    this first.
    """
    return _current.level == "debug"


def make_observer(config: LogConfig, stream: IO[str] | None = None) -> ILogObserver:
    """An observer writing ``config.format`` at ``config.level`` and above."""
    if stream is None:
        stream = (
            sys.stdout
            if config.file == "-"
            else open(config.file, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        )
    return LineObserver(stream, config.format == "json", _LEVELS[config.level])


def observer() -> ILogObserver:
    """Factory for ``twistd --logger gateway.logging.observer``."""
    return make_observer(_current)


_SCALARS = (str, int, float, bool, type(None))


@implementer(ILogObserver)
class LineObserver:
    """One line per event, text or JSON, at a minimum level.

    Twisted's own file observers spend ~50 us per event (string.Formatter,
    a strftime per line, JSON of every field flattened twice); at a few
    events per call that was a tenth of the gateway's CPU per call. This
    one formats with ``str.format_map`` (Twisted's formatter only for what
    that cannot do: call syntax, failures), caches the time per second and
    writes JSON of the scalar fields only.
    """

    def __init__(self, stream: IO[str], as_json: bool, level: LogLevel) -> None:
        self._stream = stream
        self._json = as_json
        ordered = list(LogLevel.iterconstants())  # debug, info, ... critical
        self._levels = frozenset(ordered[ordered.index(level) :])
        self._second = -1
        self._stamp = ""

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level", LogLevel.info)
        if level not in self._levels:
            return
        line = self._json_line(event, level) if self._json else self._text(event, level)
        self._stream.write(line)
        self._stream.flush()

    def _time(self, event: LogEvent) -> str:
        """ISO 8601 to the second, local zone, as Twisted writes it."""
        when = event.get("log_time") or time.time()
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._stamp

    @staticmethod
    def _message(event: LogEvent) -> str:
        fmt = event.get("log_format")
        if isinstance(fmt, str):
            try:
                return fmt.format_map(event)
            except Exception:  # noqa: BLE001, S110 - Twisted's formatter copes
                pass
        return formatEvent(event)

    def _text(self, event: LogEvent, level: LogLevel) -> str:
        if "log_failure" in event:
            # Rare: Twisted's layout with the traceback indented below.
            return eventAsText(event, formatTime=lambda _t: self._time(event)) + "\n"
        system = event.get("log_system")
        if system is None:
            system = f"{event.get('log_namespace', '-')}#{level.name}"
        message = self._message(event).replace("\n", "\n\t")
        return f"{self._time(event)} [{system}] {message}\n"

    def _json_line(self, event: LogEvent, level: LogLevel) -> str:
        record: dict[str, Any] = {
            "time": self._time(event),
            "level": level.name,
            "namespace": event.get("log_namespace", "-"),
            "message": self._message(event),
            "log_format": event.get("log_format"),
        }
        for key, value in event.items():
            if key.startswith("log_") or key in record:
                continue
            record[key] = value if isinstance(value, _SCALARS) else str(value)
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        return json.dumps(record) + "\n"
