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
    events = [json.loads(line) for line in out.splitlines()]
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


def _failure_and_oddities(config: LogConfig) -> str:
    stream = io.StringIO()
    publisher = LogPublisher(make_observer(config, stream))
    log = Logger(namespace="gateway.test", observer=publisher)
    try:
        1 / 0  # noqa: B018 - the failure to log
    except ZeroDivisionError:
        log.failure("Handler for {what} failed", what="INVITE")
    # Twisted's call syntax, which str.format cannot do, still renders.
    log.info("Peer {peer.upper()} gone", peer="abc")
    publisher({"log_format": "from twistd {n}", "n": 7, "log_system": "-"})
    log.warn("Object {obj!r} and {ratio:.1f}", obj=object, ratio=0.25)
    return stream.getvalue()


def test_text_renders_failures_call_syntax_and_system() -> None:
    """Failures get their traceback, call syntax renders, a log_system
    replaces the namespace, format specs and conversions work."""
    out = _failure_and_oddities(LogConfig(format="text", level="info"))
    assert "[gateway.test#critical] Handler for INVITE failed" in out
    assert "ZeroDivisionError" in out
    assert "[gateway.test#info] Peer ABC gone" in out
    assert "[-] from twistd 7" in out
    assert "Object <class 'object'> and 0.2" in out


def test_json_renders_failures_and_non_scalar_fields() -> None:
    """JSON lines carry the rendered message, level, namespace, the
    traceback of a failure, and non-scalar fields as strings."""
    out = _failure_and_oddities(LogConfig(format="json", level="info"))
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["level"] for e in events] == ["critical", "info", "info", "warn"]
    assert events[0]["message"] == "Handler for INVITE failed"
    assert "ZeroDivisionError" in events[0]["traceback"]
    assert events[1]["message"] == "Peer ABC gone"
    assert events[3]["obj"] == "<class 'object'>"
    assert events[3]["ratio"] == 0.25
    assert all(e["namespace"] for e in events)
