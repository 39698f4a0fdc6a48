"""Log output per [log]: JSON lines or text, filtered by level."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher

from gateway.config import LogConfig
from gateway.logging import make_observer


def _emit(config: LogConfig) -> str:
    stream = io.StringIO()
    publisher = LogPublisher(make_observer(config, stream))
    log = Logger(namespace="test", observer=publisher)
    log.debug("debug {n}", n=1)
    log.info("SIP {method} from {peer}", method="INVITE", peer="127.0.0.1:5060")
    log.error("boom {code}", code=500)
    return stream.getvalue()


def test_json_lines_keep_fields() -> None:
    """format = json: one object per line, fields kept for log pipelines."""
    out = _emit(LogConfig(format="json", level="info"))
    events = [json.loads(line) for line in out.strip("\x1e\n").split("\n\x1e")]
    assert [e["log_format"] for e in events] == [
        "SIP {method} from {peer}",
        "boom {code}",
    ]
    assert events[0]["method"] == "INVITE"
    assert events[0]["peer"] == "127.0.0.1:5060"


def test_text_and_level_filter() -> None:
    """format = text at level error shows only errors, rendered."""
    out = _emit(LogConfig(format="text", level="error"))
    assert "boom 500" in out
    assert "INVITE" not in out
    assert "debug" not in out
