"""The configuration file: read once at start, validated, frozen.

One TOML file (``tomllib``), every key overridable by an environment variable
``VOIPGW_<SECTION>__<KEY>`` (nested tables add ``__<TABLE>``). Each section
is a frozen attrs class whose fields carry their own checks in metadata, so
the schema, the defaults, the validation and ``check-config``'s output all
come from one declaration. Problems are collected, not raised one by one:
an operator fixes a file in one go.

Relative paths are resolved against the directory of the config file, so a
config and its certificates can move together.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

__all__ = [
    "WEBHOOK_EVENTS",
    "ApiConfig",
    "ApnsConfig",
    "CallsConfig",
    "Config",
    "ConfigError",
    "GcConfig",
    "ListenerConfig",
    "LocalPushConfig",
    "LogConfig",
    "SipConfig",
    "StoreConfig",
    "TlsListenerConfig",
    "WebhooksConfig",
    "dump_config",
    "load_config",
    "parse_proxy",
]

ENV_PREFIX = "VOIPGW_"

# What a path field must point at when the config is loaded.
_CERT = "cert"  # a readable file
_PRIVATE = "private"  # a readable file that is not world-readable
_WRITABLE = "writable"  # a file we create: its directory must be usable

Check = Callable[[Any], str | None]


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _setting(
    default: Any,
    *,
    check: Check | None = None,
    path: str | None = None,
    secret: bool = False,
    doc: str = "",
) -> Any:
    return attrs.field(
        default=default,
        metadata={"check": check, "path": path, "secret": secret, "doc": doc},
    )


def _between(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        if not low <= value <= high:
            return f"must be between {_num(low)} and {_num(high)} (got {value!r})"
        return None

    return check


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value not in choices:
            names = ", ".join(repr(c) for c in choices)
            return f"must be one of {names} (got {value!r})"
        return None

    return check


def _not_empty(value: Any) -> str | None:
    return "must not be empty" if not value else None


def _networks(value: Any) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an IP network (e.g. 10.0.0.0/8)"
    return None


def _address(value: Any) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def parse_proxy(value: str) -> tuple[str, int]:
    """``http://[user:pw@]host:port`` or ``host:port`` -> (host, port)."""
    rest = value.split("://", 1)[-1].rsplit("@", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return host.strip("[]"), int(port)


def _proxy(value: Any) -> str | None:
    if not value:
        return None
    try:
        parse_proxy(value)
    except ValueError:
        return "must be http://host:port (credentials, if any, before an @)"
    return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_PORT = _between(0, 65535)


@attrs.frozen
class ListenerConfig:
    """A plain (UDP or TCP) SIP listener."""

    enabled: bool = _setting(True)
    bind: str = _setting("127.0.0.1", check=_address)
    port: int = _setting(5060, check=_PORT)


@attrs.frozen
class TlsListenerConfig:
    """The SIP-over-TLS listener."""

    enabled: bool = _setting(False)
    bind: str = _setting("127.0.0.1", check=_address)
    port: int = _setting(5061, check=_PORT)
    cert: Path | None = _setting(None, path=_CERT)
    key: Path | None = _setting(None, path=_PRIVATE)


@attrs.frozen
class SipConfig:
    """SIP transports, RFC 3261 timers and request limits."""

    udp: ListenerConfig = _setting(ListenerConfig())
    tcp: ListenerConfig = _setting(ListenerConfig())
    tls: TlsListenerConfig = _setting(TlsListenerConfig())
    t1_ms: int = _setting(500, check=_between(50, 10_000))
    t2_ms: int = _setting(4000, check=_between(100, 60_000))
    t4_ms: int = _setting(5000, check=_between(100, 60_000))
    max_message_bytes: int = _setting(65_535, check=_between(1024, 1_048_576))
    max_message_body_bytes: int = _setting(4096, check=_between(1, 65_536))
    tcp_idle_timeout_s: float = _setting(300.0, check=_between(1, 86_400))
    tcp_message_timeout_s: float = _setting(10.0, check=_between(0.5, 600))
    tcp_max_connections: int = _setting(10_000, check=_between(1, 1_000_000))
    max_pending_invites: int = _setting(50_000, check=_between(1, 10_000_000))
    overload_lag_ms: int = _setting(250, check=_between(0, 60_000))
    overload_retry_after_s: int = _setting(5, check=_between(1, 86_400))
    register_networks: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1/128"), check=_networks
    )
    user_agent: str = _setting("voipgw", check=_not_empty)


@attrs.frozen
class LocalPushConfig:
    """The device socket service (localpush.md)."""

    enabled: bool = _setting(True)
    bind: str = _setting("127.0.0.1", check=_address)
    port: int = _setting(5223, check=_PORT)
    transport: str = _setting("tls", check=_one_of("tls", "tcp"))
    cert: Path | None = _setting(None, path=_CERT)
    key: Path | None = _setting(None, path=_PRIVATE)
    jwt_secret_file: Path | None = _setting(None, path=_PRIVATE)
    heartbeat_s: int = _setting(30, check=_between(5, 3600))
    ack_timeout_s: float = _setting(3.0, check=_between(0.1, 60))
    handshake_timeout_s: float = _setting(10.0, check=_between(1, 120))
    max_frame: int = _setting(16_384, check=_between(1024, 1_048_576))
    rate_per_s: float = _setting(20.0, check=_between(1, 10_000))
    rate_burst: int = _setting(50, check=_between(1, 100_000))
    send_buffer_max_bytes: int = _setting(262_144, check=_between(16_384, 67_108_864))
    message_ttl_s: int = _setting(604_800, check=_between(60, 31_536_000))
    shutdown_window_s: float = _setting(10.0, check=_between(0, 600))


@attrs.frozen
class ApnsConfig:
    """APNs credentials, endpoints and back-pressure bounds."""

    auth: str = _setting("disabled", check=_one_of("token", "certificate", "disabled"))
    key_file: Path | None = _setting(None, path=_PRIVATE)
    key_id: str = _setting("")
    team_id: str = _setting("")
    cert_file: Path | None = _setting(None, path=_CERT)
    cert_key_file: Path | None = _setting(None, path=_PRIVATE)
    bundle_id: str = _setting("")
    production_host: str = _setting("api.push.apple.com", check=_not_empty)
    production_port: int = _setting(443, check=_between(1, 65535))
    sandbox_host: str = _setting("api.sandbox.push.apple.com", check=_not_empty)
    sandbox_port: int = _setting(443, check=_between(1, 65535))
    ca_file: Path | None = _setting(None, path=_CERT)
    proxy: str = _setting("", check=_proxy, secret=True)
    max_in_flight: int = _setting(1000, check=_between(1, 100_000))
    max_queued: int = _setting(10_000, check=_between(0, 1_000_000))
    request_timeout_s: float = _setting(10.0, check=_between(0.5, 120))
    expiration_s: int = _setting(0, check=_between(0, 60))
    token_refresh_s: int = _setting(2400, check=_between(1200, 3000))


@attrs.frozen
class CallsConfig:
    """Ringing, resume replay and VoIP push rate limits (calls.md)."""

    ring_timeout_s: float = _setting(30.0, check=_between(1, 300))
    decline_policy: str = _setting("all", check=_one_of("all", "any"))
    resume_window_s: float = _setting(60.0, check=_between(0, 3600))
    custom_headers_max_bytes: int = _setting(1024, check=_between(0, 4096))
    callee_push_limit: int = _setting(10, check=_between(1, 10_000))
    callee_push_window_s: float = _setting(60.0, check=_between(1, 86_400))
    caller_push_limit: int = _setting(30, check=_between(1, 100_000))
    caller_push_window_s: float = _setting(60.0, check=_between(1, 86_400))


@attrs.frozen
class ApiConfig:
    """The HTTP control API."""

    enabled: bool = _setting(True)
    bind: str = _setting("127.0.0.1", check=_address)
    port: int = _setting(8080, check=_PORT)
    tls: bool = _setting(False)
    cert: Path | None = _setting(None, path=_CERT)
    key: Path | None = _setting(None, path=_PRIVATE)
    keys_file: Path | None = _setting(None, path=_PRIVATE)
    max_body_bytes: int = _setting(65_536, check=_between(1024, 16_777_216))


WEBHOOK_EVENTS = ("call.started", "call.ringing", "call.ended", "message.stored")


def _events(value: Any) -> str | None:
    unknown = [e for e in value if e not in WEBHOOK_EVENTS]
    if unknown:
        names = ", ".join(repr(e) for e in WEBHOOK_EVENTS)
        return f"unknown event {unknown[0]!r} (known: {names})"
    return None


def _http_url(value: Any) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    return None


@attrs.frozen
class WebhooksConfig:
    """Call and message events POSTed to the integrator, HMAC-signed."""

    enabled: bool = _setting(False)
    url: str = _setting("", check=_http_url)
    secret_file: Path | None = _setting(None, path=_PRIVATE)
    events: tuple[str, ...] = _setting(
        ("call.ringing", "call.ended", "message.stored"), check=_events
    )
    timeout_s: float = _setting(5.0, check=_between(0.5, 60))
    max_queue: int = _setting(10_000, check=_between(1, 1_000_000))
    max_attempts: int = _setting(8, check=_between(1, 100))
    backoff_s: float = _setting(1.0, check=_between(0.1, 3600))
    backoff_max_s: float = _setting(300.0, check=_between(1, 86_400))


@attrs.frozen
class StoreConfig:
    """Where devices, bindings and pending messages live."""

    backend: str = _setting("sqlite", check=_one_of("sqlite"))
    path: Path = _setting(Path("voipgw.sqlite3"), path=_WRITABLE)
    purge_interval_s: float = _setting(60.0, check=_between(1, 86_400))


@attrs.frozen
class LogConfig:
    """Log output: human text or one JSON object per line."""

    format: str = _setting("text", check=_one_of("text", "json"))
    level: str = _setting("info", check=_one_of("debug", "info", "warn", "error"))
    file: str = _setting("-")


@attrs.frozen
class GcConfig:
    """How often CPython's cycle collector runs (see gateway/gcpolicy.py)."""

    freeze_interval_s: float = _setting(1.0, check=_between(0, 3600))
    full_interval_s: float = _setting(3600.0, check=_between(0, 604_800))
    gen0_threshold: int = _setting(10_000, check=_between(0, 1_000_000))


@attrs.frozen
class Config:
    """The whole validated configuration."""

    path: Path | None = attrs.field(default=None, metadata={"internal": True})
    dev_mode: bool = _setting(False)
    sip: SipConfig = _setting(SipConfig())
    localpush: LocalPushConfig = _setting(LocalPushConfig())
    apns: ApnsConfig = _setting(ApnsConfig())
    calls: CallsConfig = _setting(CallsConfig())
    api: ApiConfig = _setting(ApiConfig())
    webhooks: WebhooksConfig = _setting(WebhooksConfig())
    store: StoreConfig = _setting(StoreConfig())
    log: LogConfig = _setting(LogConfig())
    gc: GcConfig = _setting(GcConfig())

    def dev_files(self) -> list[tuple[Path, Path]]:
        """(cert, key) pairs that ``dev_mode`` should generate at start."""
        pairs: list[tuple[Path, Path]] = []
        for cert, key in (
            (self.localpush.cert, self.localpush.key),
            (self.sip.tls.cert, self.sip.tls.key),
            (self.api.cert, self.api.key),
        ):
            if cert is None or key is None or cert.exists():
                continue
            if (cert, key) not in pairs:
                pairs.append((cert, key))
        return pairs


for _cls in (
    ListenerConfig,
    TlsListenerConfig,
    SipConfig,
    LocalPushConfig,
    ApnsConfig,
    CallsConfig,
    ApiConfig,
    WebhooksConfig,
    StoreConfig,
    LogConfig,
    GcConfig,
    Config,
):
    attrs.resolve_types(_cls)  # the loader reads field types at run time

T = TypeVar("T")


class _Loader:
    """Turns raw TOML tables plus the environment into config objects."""

    def __init__(self, source: str, base: Path, dev_mode: bool) -> None:
        self.source = source
        self.base = base
        self.dev_mode = dev_mode
        self.problems: list[str] = []
        self.bad: set[str] = set()

    def problem(self, where: str, key: str, reason: str) -> None:
        self.problems.append(f"{where}: {key}: {reason}")
        self.bad.add(key)

    def build(self, cls: type[T], raw: Any, key: str, origin: Mapping[str, str]) -> T:
        if not isinstance(raw, dict):
            self.problem(self.source, key, "must be a table")
            raw = {}
        fields = _settings(cls)
        for name in raw:
            if name not in fields:
                self._unknown(f"{key}.{name}" if key else name, name, list(fields))
        values: dict[str, Any] = {}
        for name, f in fields.items():
            full = f"{key}.{name}" if key else name
            if name not in raw:
                continue
            where = origin.get(full, self.source)
            value = self._value(f, raw[name], full, where, origin)
            if value is not _BAD:
                values[name] = value
        return cls(**values)

    def _unknown(self, full: str, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.problem(self.source, full, f"unknown setting{hint}")

    def _value(
        self, f: Any, raw: Any, full: str, where: str, origin: Mapping[str, str]
    ) -> Any:
        kind = f.type
        if attrs.has(kind):
            return self.build(kind, raw, full, origin)
        value = self._typed(kind, raw, full, where)
        if value is _BAD:
            return _BAD
        check = f.metadata.get("check")
        reason = check(value) if check is not None else None
        if reason is not None:
            self.problem(where, full, reason)
            return _BAD
        if f.metadata.get("path") and value is not None:
            value = Path(os.path.normpath(self.base / value))
        return value

    def _typed(self, kind: Any, raw: Any, full: str, where: str) -> Any:
        optional = False
        if isinstance(kind, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind, optional = args[0], True
        if optional and raw == "":
            return None
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            return self._wrong(full, where, "a boolean (true or false)", raw)
        if kind is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            return self._wrong(full, where, "an integer", raw)
        if kind is float:
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
            return self._wrong(full, where, "a number", raw)
        if kind in (str, Path):
            if isinstance(raw, str):
                return Path(raw) if kind is Path else raw
            return self._wrong(full, where, "a string", raw)
        if typing.get_origin(kind) is tuple:
            if isinstance(raw, list) and all(isinstance(i, str) for i in raw):
                return tuple(raw)
            return self._wrong(full, where, "a list of strings", raw)
        raise TypeError(f"no loader for {kind!r}")  # our bug, not the user's

    def _wrong(self, full: str, where: str, what: str, raw: Any) -> object:
        self.problem(where, full, f"must be {what} (got {_toml_type(raw)})")
        return _BAD


# Files that dev_mode creates at start when absent: TLS pairs and the JWT secret.
_DEV_GENERATED = frozenset(
    {
        "localpush.cert",
        "localpush.key",
        "localpush.jwt_secret_file",
        "sip.tls.cert",
        "sip.tls.key",
        "api.cert",
        "api.key",
        "api.keys_file",
    }
)
_BAD = object()


def _settings(cls: type) -> dict[str, Any]:
    """The user-facing fields of a config class, by name."""
    return {f.name: f for f in attrs.fields(cls) if not f.metadata.get("internal")}


def _toml_type(raw: Any) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }
    return names.get(type(raw), type(raw).__name__)


def _env_overrides(
    raw: dict[str, Any], environ: Mapping[str, str], loader: _Loader
) -> dict[str, str]:
    """Merge ``VOIPGW_A__B__C`` into ``raw``; return {dotted key: variable}."""
    origin: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        dotted = ".".join(parts)
        field = _field_for(parts)
        if field is None:
            loader.problems.append(f"{var}: {dotted}: unknown setting")
            continue
        value = _parse_env(field.type, environ[var])
        if value is None:
            kind = _kind_name(field.type)
            loader.problems.append(
                f"{var}: {dotted}: must be {kind} (got {environ[var]!r})"
            )
            continue
        table = raw
        for part in parts[:-1]:
            nested = table.setdefault(part, {})
            if not isinstance(nested, dict):
                break
            table = nested
        else:
            table[parts[-1]] = value
            origin[dotted] = var
    return origin


def _field_for(parts: list[str]) -> Any:
    cls: Any = Config
    field = None
    for part in parts:
        if cls is None or not attrs.has(cls):
            return None
        fields = _settings(cls)
        if part not in fields:
            return None
        field = fields[part]
        cls = field.type if attrs.has(field.type) else None
    if field is None or attrs.has(field.type):
        return None
    return field


def _parse_env(kind: Any, text: str) -> Any:
    if isinstance(kind, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        return _ENV_BOOLS.get(text.strip().lower())
    if kind is int:
        try:
            return int(text)
        except ValueError:
            return None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            return None
    if typing.get_origin(kind) is tuple:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


_ENV_BOOLS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _kind_name(kind: Any) -> str:
    if isinstance(kind, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return {bool: "a boolean", int: "an integer", float: "a number"}.get(
        kind, "a string"
    )


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, validate; raise ConfigError."""
    path = Path(path)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{source}: cannot read: file does not exist"]) from None
    except PermissionError:
        raise ConfigError([f"{source}: cannot read: permission denied"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: cannot read: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: invalid TOML: {e}"]) from None
    return _load(raw, source, path.resolve().parent, environ)


def _load(
    raw: dict[str, Any],
    source: str,
    base: Path,
    environ: Mapping[str, str] | None,
) -> Config:
    environ = os.environ if environ is None else environ
    probe = _Loader(source, base, dev_mode=False)
    origin = _env_overrides(raw, environ, probe)
    dev_mode = raw.get("dev_mode", False) is True
    loader = _Loader(source, base, dev_mode=dev_mode)
    loader.problems.extend(probe.problems)
    config = loader.build(Config, raw, "", origin)
    config = attrs.evolve(config, path=Path(source))
    _file_checks(config, loader, origin)
    loader.problems.extend(_cross_checks(config, source, loader.bad))
    if loader.problems:
        raise ConfigError(loader.problems)
    return config


def _file_checks(config: Config, loader: _Loader, origin: Mapping[str, str]) -> None:
    """Check the files of enabled features only; dev_mode may create some."""
    wanted: list[tuple[str, Path | None, str]] = []
    lp, tls, api, apns = config.localpush, config.sip.tls, config.api, config.apns
    if lp.enabled:
        if lp.transport == "tls":
            wanted += [("localpush.cert", lp.cert, _CERT)]
            wanted += [("localpush.key", lp.key, _PRIVATE)]
        wanted += [("localpush.jwt_secret_file", lp.jwt_secret_file, _PRIVATE)]
    if tls.enabled:
        wanted += [
            ("sip.tls.cert", tls.cert, _CERT),
            ("sip.tls.key", tls.key, _PRIVATE),
        ]
    if api.enabled and api.tls:
        wanted += [("api.cert", api.cert, _CERT), ("api.key", api.key, _PRIVATE)]
    if api.enabled:
        wanted += [("api.keys_file", api.keys_file, _PRIVATE)]
    if apns.auth == "token":
        wanted += [("apns.key_file", apns.key_file, _PRIVATE)]
    if apns.auth == "certificate":
        wanted += [("apns.cert_file", apns.cert_file, _CERT)]
        wanted += [("apns.cert_key_file", apns.cert_key_file, _PRIVATE)]
    if apns.auth != "disabled":
        wanted += [("apns.ca_file", apns.ca_file, _CERT)]
    if config.webhooks.enabled:
        wanted += [("webhooks.secret_file", config.webhooks.secret_file, _PRIVATE)]
    wanted += [("store.path", config.store.path, _WRITABLE)]
    for key, path, kind in wanted:
        if path is None or key in loader.bad:
            continue
        reason = _file_problem(path, kind, config.dev_mode and key in _DEV_GENERATED)
        if reason is not None:
            loader.problem(origin.get(key, loader.source), key, reason)


def _file_problem(path: Path, kind: str, may_create: bool) -> str | None:
    if kind == _WRITABLE:
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"{parent} is not a directory"
        if not os.access(parent, os.W_OK):
            return f"directory {parent} is not writable"
        return None
    if not path.exists():
        return None if may_create else f"file {path} does not exist"
    if not path.is_file():
        return f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"file {path} is not readable"
    if kind == _PRIVATE and path.stat().st_mode & stat.S_IROTH:
        return f"secret file {path} is world-readable (chmod o-r, e.g. 0600)"
    return None


def _cross_checks(config: Config, source: str, bad: set[str]) -> list[str]:
    """Rules between settings; none is reported on a key that already failed."""
    found: list[tuple[str, str]] = []
    lp, tls, api, apns = config.localpush, config.sip.tls, config.api, config.apns
    if lp.enabled and lp.transport == "tls":
        found += _required(
            lp, "localpush", ("cert", "key"), "localpush.transport 'tls'"
        )
    if lp.enabled and lp.jwt_secret_file is None:
        found.append(("localpush.jwt_secret_file", "required to check devices"))
    if tls.enabled:
        found += _required(tls, "sip.tls", ("cert", "key"), "sip.tls.enabled")
    if api.enabled and api.tls:
        found += _required(api, "api", ("cert", "key"), "api.tls")
    if config.sip.t2_ms < config.sip.t1_ms:
        found.append(("sip.t2_ms", "must not be smaller than sip.t1_ms"))
    if apns.auth == "token":
        found += _required(
            apns, "apns", ("key_file", "key_id", "team_id"), "apns.auth = 'token'"
        )
    if apns.auth == "certificate":
        found += _required(
            apns, "apns", ("cert_file", "cert_key_file"), "apns.auth = 'certificate'"
        )
    if apns.auth != "disabled" and not apns.bundle_id:
        found.append(("apns.bundle_id", "required when APNs is enabled"))
    hooks = config.webhooks
    if hooks.enabled:
        found += _required(
            hooks, "webhooks", ("url", "secret_file"), "webhooks.enabled"
        )
    found += _port_clashes(config)
    return [f"{source}: {key}: {reason}" for key, reason in found if key not in bad]


def _required(
    section: object, prefix: str, names: tuple[str, ...], because: str
) -> list[tuple[str, str]]:
    return [
        (f"{prefix}.{name}", f"required with {because}")
        for name in names
        if not getattr(section, name)
    ]


def _port_clashes(config: Config) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str, int], str] = {}
    out = []
    listeners: list[
        tuple[
            str,
            str,
            bool,
            ListenerConfig | TlsListenerConfig | LocalPushConfig | ApiConfig,
        ]
    ] = [
        ("sip.udp", "udp", config.sip.udp.enabled, config.sip.udp),
        ("sip.tcp", "tcp", config.sip.tcp.enabled, config.sip.tcp),
        ("sip.tls", "tcp", config.sip.tls.enabled, config.sip.tls),
        ("localpush", "tcp", config.localpush.enabled, config.localpush),
        ("api", "tcp", config.api.enabled, config.api),
    ]
    for name, proto, enabled, listener in listeners:
        if not enabled or listener.port == 0:
            continue
        key = (proto, listener.bind, listener.port)
        if key in seen:
            out.append(
                (f"{name}.port", f"{listener.port} is already used by {seen[key]}.port")
            )
        seen[key] = name
    return out


def dump_config(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets masked, for check-config."""
    return _dump(config)


def _dump(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _settings(type(obj)).values():
        value = getattr(obj, f.name)
        if attrs.has(type(value)):
            out[f.name] = _dump(value)
        elif f.metadata.get("secret") and value:
            out[f.name] = _mask(value)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        elif value is None:
            out[f.name] = ""
        else:
            out[f.name] = value
    return out


def _mask(value: str) -> str:
    """Hide credentials in a URL-like value, keep where it points."""
    if "@" in value:
        scheme, sep, rest = value.rpartition("://")
        return f"{scheme}{sep}********@{rest.rsplit('@', 1)[1]}"
    return "********"
