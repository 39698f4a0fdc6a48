"""Shared helpers for the control API tests: a gateway on ephemeral ports,
an HTTP client that checks every answer against the OpenAPI document, and
local-push devices over TLS."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import treq
from gw_device import Device
from gw_example import EPHEMERAL, example_in
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.http_headers import Headers

from gateway.api import ApiListener, load_document
from gateway.api._schema import validate
from gateway.app import Gateway, build_service
from gateway.config import load_config
from gateway.devfiles import read_jwt_secret
from gateway.devicetoken import mint_device_token
from gateway.localpush.codec import encode_frame

KEY = "test-key-0123456789abcdefXYZ"
_DEFAULT: Any = object()


def make_gateway(
    tmp_path: Path,
    *,
    keys: str | None = KEY + "\n",
    env: Mapping[str, str] | None = None,
) -> Gateway:
    """Build (not start) the example gateway with ephemeral ports."""
    example = example_in(tmp_path)
    etc = example.parent
    environ = dict(EPHEMERAL)
    if keys is not None:
        keys_file = etc / "api-keys"
        keys_file.write_text(keys)
        keys_file.chmod(0o600)
        environ["VOIPGW_API__KEYS_FILE"] = str(keys_file)
    else:
        environ["VOIPGW_API__KEYS_FILE"] = ""  # none at all (an empty value unsets)
    environ.update(env or {})
    config = load_config(etc / "voipgw.toml", environ=environ)
    return build_service(config, reactor)  # type: ignore[arg-type]


def api_listener(gateway: Gateway) -> ApiListener:
    listener = gateway.listeners["api"]
    assert isinstance(listener, ApiListener)
    return listener


def base_url(gateway: Gateway, scheme: str = "http") -> str:
    address = gateway.listeners["api"].address
    assert address is not None
    return f"{scheme}://127.0.0.1:{address[1]}"


@attrs.frozen
class Answer:
    status: int
    headers: Headers
    body: Any
    raw: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


def _operation(method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
    document = load_document()
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template, item.get(method.lower())
    return None, None


def check_documented(method: str, path: str, answer: Answer) -> None:
    """The answer is one the document promises: status listed, body valid."""
    document = load_document()
    template, operation = _operation(method, path.split("?", 1)[0])
    if operation is None:
        # Unknown path (404) or method (405): the error shape all the same.
        assert answer.status in (404, 405), (method, path, answer.status)
        validate(answer.body, {"$ref": "#/components/schemas/Error"}, document)
        return
    responses = operation["responses"]
    assert str(answer.status) in responses, (method, template, answer.status)
    content = responses[str(answer.status)].get("content")
    if content is None:
        assert answer.raw == b""
        return
    media, spec = next(iter(content.items()))
    content_type = answer.header("content-type") or ""
    assert content_type.startswith(media), (content_type, media)
    if media == "application/json":
        validate(answer.body, spec["schema"], document)


class Client:
    """treq over real HTTP; every answer is checked against the document."""

    def __init__(self, base: str, key: str | None = KEY, **treq_kwargs: Any) -> None:
        self.base = base
        self.key = key
        self._kwargs = treq_kwargs

    async def request(
        self,
        method: str,
        path: str,
        body: Any = _DEFAULT,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: Any = _DEFAULT,
        check: bool = True,
    ) -> Answer:
        sent: dict[str, list[str]] = {}
        use_key = self.key if key is _DEFAULT else key
        if use_key is not None:
            sent["Authorization"] = [f"Bearer {use_key}"]
        if body is not _DEFAULT:
            data = json.dumps(body).encode()
            sent["Content-Type"] = ["application/json"]
        for name, value in (headers or {}).items():
            sent[name] = [value]
        response = await treq.request(
            method,
            self.base + path,
            data=data,
            headers=Headers(sent),  # type: ignore[arg-type]
            **self._kwargs,
        )
        raw = await treq.content(response)
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        parsed: Any = (
            json.loads(raw) if content_type.startswith("application/json") else raw
        )
        answer = Answer(response.code, response.headers, parsed, raw)
        if check:
            check_documented(method, path, answer)
        return answer

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = _DEFAULT, **kw: Any) -> Answer:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = _DEFAULT, **kw: Any) -> Answer:
        return await self.request("PUT", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Answer:
        return await self.request("DELETE", path, **kw)


def frame(obj: dict[str, Any]) -> bytes:
    return encode_frame(obj, 16384)


async def connect_device(
    gateway: Gateway,
    device_id: str,
    aor: str = "sip:bob@example.com",
    **hello: Any,
) -> Device:
    """A local-push device over TLS, past its welcome."""
    config = gateway.config
    listener = gateway.listeners["localpush"]
    assert listener.address is not None
    host, port = listener.address
    assert config.localpush.cert is not None
    assert config.localpush.jwt_secret_file is not None
    options = optionsForClientTLS(
        "localhost",
        trustRoot=Certificate.loadPEM(config.localpush.cert.read_bytes()),
    )
    endpoint = endpoints.SSL4ClientEndpoint(reactor, host, port, options)
    device: Device = await endpoints.connectProtocol(endpoint, Device())
    secret = read_jwt_secret(config.localpush.jwt_secret_file)
    token = mint_device_token(secret, device_id, aor, now=time.time())
    message = {"type": "hello", "v": 1, "device_id": device_id, "token": token}
    message.update(hello)
    device.transport.write(frame(message))
    welcome = await device.next_frame()
    assert welcome["type"] == "welcome", welcome
    return device


async def close_device(device: Device) -> None:
    device.transport.write(frame({"type": "bye"}))
    await device.lost


def until(condition: Any, timeout: float = 5.0) -> Deferred[None]:
    """Fire once ``condition()`` is true (bounded wait on real sockets)."""
    from twisted.internet.task import LoopingCall

    deadline = time.monotonic() + timeout
    done: Deferred[None] = Deferred()

    def poll() -> None:
        if condition():
            loop.stop()
            done.callback(None)
        elif time.monotonic() > deadline:
            loop.stop()
            done.errback(TimeoutError("condition not met in time"))

    loop = LoopingCall(poll)
    loop.start(0.01)
    return done
