"""Log output per the ``[log]`` section: text or JSON lines, by level.

twistd picks its observer before the gateway could, so the ``[log]`` section
takes effect when twistd is started with ``--logger gateway.logging.observer``
(as the systemd unit in ``etc/`` does); ``makeService`` records the section
here first. Without ``--logger`` twistd's own text log to stdout is used.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from gateway.config import LogConfig

__all__ = ["configure", "make_observer", "observer"]

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


def make_observer(config: LogConfig, stream: IO[str] | None = None) -> ILogObserver:
    """An observer writing ``config.format`` at ``config.level`` and above."""
    if stream is None:
        stream = (
            sys.stdout
            if config.file == "-"
            else open(config.file, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        )
    inner = (
        jsonFileLogObserver(stream)
        if config.format == "json"
        else textFileLogObserver(stream)
    )
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[config.level])
    return FilteringLogObserver(inner, [predicate])


def observer() -> ILogObserver:
    """Factory for ``twistd --logger gateway.logging.observer``."""
    return make_observer(_current)
