"""The config file: defaults, env overrides, and one exact message per problem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gw_config import BASE, write_config_files
from gw_example import EXAMPLE, example_in

from gateway.cli import to_toml
from gateway.config import ConfigError, dump_config, load_config


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    """A directory with a cert pair, a private secret and a world-readable one."""
    return write_config_files(tmp_path)


def _load(cfgdir: Path, text: str, env: dict[str, str] | None = None) -> Path:
    path = cfgdir / "voipgw.toml"
    path.write_text(text)
    load_config(path, environ=env or {})
    return path


def _problems(cfgdir: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = cfgdir / "voipgw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ=env or {})
    prefix = f"{path}: "
    return [p.removeprefix(prefix) for p in exc.value.problems]


# (name, extra TOML appended to BASE or a whole file, env, expected problems)
BAD: list[tuple[str, str, dict[str, str], list[str]]] = [
    (
        "unknown section",
        BASE + "[sipp]\nport = 1\n",
        {},
        ["sipp: unknown setting (did you mean 'sip'?)"],
    ),
    (
        "unknown key",
        BASE + "[calls]\nring_timeout = 5\n",
        {},
        ["calls.ring_timeout: unknown setting (did you mean 'ring_timeout_s'?)"],
    ),
    (
        "unknown key no hint",
        BASE + "[calls]\nzzz = 5\n",
        {},
        ["calls.zzz: unknown setting"],
    ),
    (
        "string for int",
        BASE + '[sip.udp]\nport = "5060"\n',
        {},
        ["sip.udp.port: must be an integer (got string)"],
    ),
    (
        "overload lag out of range",
        BASE + "[sip]\noverload_lag_ms = -1\nmax_pending_invites = 0\n",
        {},
        [
            "sip.max_pending_invites: must be between 1 and 10000000 (got 0)",
            "sip.overload_lag_ms: must be between 0 and 60000 (got -1)",
        ],
    ),
    (
        "float for int",
        BASE + "[sip.udp]\nport = 5060.5\n",
        {},
        ["sip.udp.port: must be an integer (got float)"],
    ),
    (
        "bool for int",
        BASE + "[calls]\ncallee_push_limit = true\n",
        {},
        ["calls.callee_push_limit: must be an integer (got boolean)"],
    ),
    (
        "port out of range",
        BASE + "[sip.tcp]\nport = 70000\n",
        {},
        ["sip.tcp.port: must be between 0 and 65535 (got 70000)"],
    ),
    (
        "negative timeout",
        BASE + "[calls]\nring_timeout_s = -1\n",
        {},
        ["calls.ring_timeout_s: must be between 1 and 300 (got -1.0)"],
    ),
    (
        "string for bool",
        BASE + '[api]\nenabled = "yes"\n',
        {},
        ["api.enabled: must be a boolean (true or false) (got string)"],
    ),
    (
        "bad choice",
        BASE + '[log]\nformat = "xml"\n',
        {},
        ["log.format: must be one of 'text', 'json' (got 'xml')"],
    ),
    (
        "bad transport",
        BASE.replace("[localpush]", '[localpush]\ntransport = "udp"'),
        {},
        ["localpush.transport: must be one of 'tls', 'tcp' (got 'udp')"],
    ),
    (
        "bad bind address",
        BASE + '[api]\nbind = "localhost"\n',
        {},
        ["api.bind: 'localhost' is not an IP address"],
    ),
    (
        "bad network",
        BASE + '[sip]\nregister_networks = ["10.0.0.0/33"]\n',
        {},
        ["sip.register_networks: '10.0.0.0/33' is not an IP network (e.g. 10.0.0.0/8)"],
    ),
    (
        "list of ints",
        BASE + "[sip]\nregister_networks = [1]\n",
        {},
        ["sip.register_networks: must be a list of strings (got array)"],
    ),
    ("section not a table", "calls = 5\n" + BASE, {}, ["calls: must be a table"]),
    (
        "missing cert",
        BASE.replace('"cert.pem"', '"nope.pem"'),
        {},
        ["localpush.cert: file {d}/nope.pem does not exist"],
    ),
    (
        "world-readable secret",
        BASE.replace('"secret"', '"open-secret"'),
        {},
        [
            "localpush.jwt_secret_file: secret file {d}/open-secret is "
            "world-readable (chmod o-r, e.g. 0600)"
        ],
    ),
    (
        "secret is a directory",
        BASE.replace('"secret"', '"adir"'),
        {},
        ["localpush.jwt_secret_file: {d}/adir is not a file"],
    ),
    (
        "missing jwt secret",
        BASE.replace('jwt_secret_file = "secret"\n', ""),
        {},
        ["localpush.jwt_secret_file: required to check devices"],
    ),
    (
        "tls without key",
        BASE.replace('key = "key.pem"\n', ""),
        {},
        ["localpush.key: required with localpush.transport 'tls'"],
    ),
    (
        "sip tls without cert",
        BASE + "[sip.tls]\nenabled = true\n",
        {},
        [
            "sip.tls.cert: required with sip.tls.enabled",
            "sip.tls.key: required with sip.tls.enabled",
        ],
    ),
    (
        "t2 below t1",
        BASE + "[sip]\nt1_ms = 2000\nt2_ms = 1000\n",
        {},
        ["sip.t2_ms: must not be smaller than sip.t1_ms"],
    ),
    (
        "apns token incomplete",
        BASE + '[apns]\nauth = "token"\nbundle_id = "com.x"\nkey_file = "auth.p8"\n',
        {},
        [
            "apns.key_id: required with apns.auth = 'token'",
            "apns.team_id: required with apns.auth = 'token'",
        ],
    ),
    (
        "apns cert missing",
        BASE + '[apns]\nauth = "certificate"\nbundle_id = "com.x"\n',
        {},
        [
            "apns.cert_file: required with apns.auth = 'certificate'",
            "apns.cert_key_file: required with apns.auth = 'certificate'",
        ],
    ),
    (
        "apns without bundle",
        BASE
        + '[apns]\nauth = "certificate"\ncert_file = "cert.pem"\ncert_key_file = "key.pem"\n',
        {},
        ["apns.bundle_id: required when APNs is enabled"],
    ),
    (
        "token refresh out of range",
        BASE + "[apns]\ntoken_refresh_s = 3600\n",
        {},
        ["apns.token_refresh_s: must be between 1200 and 3000 (got 3600)"],
    ),
    (
        "port clash",
        BASE + "[api]\nport = 5223\n",
        {},
        ["api.port: 5223 is already used by localpush.port"],
    ),
    (
        "two problems at once",
        BASE + '[calls]\nring_timeout_s = 0\nresume_window_s = "x"\n',
        {},
        [
            "calls.ring_timeout_s: must be between 1 and 300 (got 0.0)",
            "calls.resume_window_s: must be a number (got string)",
        ],
    ),
    (
        "env bad int",
        BASE,
        {"VOIPGW_SIP__UDP__PORT": "five"},
        ["VOIPGW_SIP__UDP__PORT: sip.udp.port: must be an integer (got 'five')"],
    ),
    (
        "env unknown key",
        BASE,
        {"VOIPGW_SIP__UDP__PROT": "5"},
        ["VOIPGW_SIP__UDP__PROT: sip.udp.prot: unknown setting"],
    ),
    (
        "env out of range names the variable",
        BASE,
        {"VOIPGW_LOCALPUSH__HEARTBEAT_S": "1"},
        [
            "VOIPGW_LOCALPUSH__HEARTBEAT_S: localpush.heartbeat_s: must be between 5 and 3600 (got 1)"
        ],
    ),
    (
        "env bad bool",
        BASE,
        {"VOIPGW_API__ENABLED": "maybe"},
        ["VOIPGW_API__ENABLED: api.enabled: must be a boolean (got 'maybe')"],
    ),
    (
        "proxy without port",
        BASE + '[apns]\nproxy = "http://proxy.example"\n',
        {},
        ["apns.proxy: must be http://host:port (credentials, if any, before an @)"],
    ),
    (
        "webhooks without url and secret",
        BASE + "[webhooks]\nenabled = true\n",
        {},
        [
            "webhooks.url: required with webhooks.enabled",
            "webhooks.secret_file: required with webhooks.enabled",
        ],
    ),
    (
        "webhook event unknown",
        BASE + '[webhooks]\nevents = ["call.exploded"]\n',
        {},
        [
            "webhooks.events: unknown event 'call.exploded' (known: 'call.started', "
            "'call.ringing', 'call.ended', 'message.stored')"
        ],
    ),
    (
        "webhook url scheme",
        BASE + '[webhooks]\nurl = "ftp://x"\n',
        {},
        ["webhooks.url: must be an http:// or https:// URL"],
    ),
    (
        "dev_mode not bool",
        'dev_mode = "yes"\n' + BASE,
        {},
        ["dev_mode: must be a boolean (true or false) (got string)"],
    ),
    (
        "store under a file",
        BASE.replace('"db/voipgw.sqlite3"', '"cert.pem/voipgw.sqlite3"'),
        {},
        ["store.path: {d}/cert.pem is not a directory"],
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "env", "expected"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_config(
    cfgdir: Path, name: str, text: str, env: dict[str, str], expected: list[str]
) -> None:
    """Each bad file stops start-up with exactly these messages (file, key, reason)."""
    assert _problems(cfgdir, text, env) == [e.format(d=cfgdir) for e in expected]


def test_env_problem_names_the_variable_not_the_file(cfgdir: Path) -> None:
    """An override's problem is reported against the variable that set it."""
    path = cfgdir / "voipgw.toml"
    path.write_text(BASE)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={"VOIPGW_SIP__UDP__PORT": "99999"})
    assert exc.value.problems == [
        "VOIPGW_SIP__UDP__PORT: sip.udp.port: must be between 0 and 65535 (got 99999)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sip\n", "invalid TOML: "),
        (None, "cannot read: file does not exist"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str | None, message: str) -> None:
    """A file that is not TOML, or not there, is one clear problem."""
    path = tmp_path / "voipgw.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.problems[0].startswith(f"{path}: {message}")


def test_unreadable_secret(cfgdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret the gateway cannot read is refused at start (root reads all, so
    the permission check is simulated)."""
    real_access = os.access

    def access(path: os.PathLike[str] | str, mode: int) -> bool:
        if Path(path).name == "secret" and mode == os.R_OK:
            return False
        return real_access(path, mode)

    monkeypatch.setattr("gateway.config.os.access", access)
    assert _problems(cfgdir, BASE) == [
        f"localpush.jwt_secret_file: file {cfgdir}/secret is not readable"
    ]


def test_defaults_and_relative_paths(cfgdir: Path) -> None:
    """Unset keys take the documented defaults; paths resolve beside the file."""
    config = load_config(_load(cfgdir, BASE), environ={})
    assert config.localpush.heartbeat_s == 30
    assert config.localpush.ack_timeout_s == 3.0
    assert config.localpush.max_frame == 16384
    assert config.calls.ring_timeout_s == 30.0
    assert config.calls.resume_window_s == 60.0
    assert config.localpush.message_ttl_s == 7 * 86400
    assert config.localpush.cert == cfgdir / "cert.pem"
    assert config.store.path == cfgdir / "db" / "voipgw.sqlite3"
    assert config.apns.auth == "disabled"


def test_env_overrides_every_kind(cfgdir: Path) -> None:
    """VOIPGW_<SECTION>__<KEY> overrides ints, floats, bools, lists and nested keys."""
    env = {
        "VOIPGW_SIP__UDP__PORT": "5070",
        "VOIPGW_CALLS__RING_TIMEOUT_S": "12.5",
        "VOIPGW_API__ENABLED": "false",
        "VOIPGW_SIP__REGISTER_NETWORKS": "10.0.0.0/8, 192.0.2.0/24",
        "VOIPGW_LOG__FORMAT": "json",
        "VOIPGW_DEV_MODE": "true",
        "OTHER": "ignored",
    }
    config = load_config(_load(cfgdir, BASE), environ=env)
    assert config.sip.udp.port == 5070
    assert config.calls.ring_timeout_s == 12.5
    assert config.api.enabled is False
    assert config.sip.register_networks == ("10.0.0.0/8", "192.0.2.0/24")
    assert config.log.format == "json"
    assert config.dev_mode is True


def test_config_is_immutable(cfgdir: Path) -> None:
    """Config objects are frozen: nothing changes them after start."""
    import attrs

    config = load_config(_load(cfgdir, BASE), environ={})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.sip.t1_ms = 1  # type: ignore[misc]


def test_dev_mode_allows_missing_dev_files(tmp_path: Path) -> None:
    """With dev_mode, absent TLS pairs and the JWT secret are to be generated."""
    config_path = example_in(tmp_path)
    etc = config_path.parent
    config = load_config(config_path, environ={})
    assert config.dev_files() == [
        (tmp_path / "var" / "dev-tls-cert.pem", tmp_path / "var" / "dev-tls-key.pem")
    ]
    no_dev = (etc / "voipgw.toml").read_text().replace("dev_mode = true", "")
    (etc / "voipgw.toml").write_text(no_dev)
    with pytest.raises(ConfigError) as exc:
        load_config(etc / "voipgw.toml", environ={})
    missing = [p.split(": ")[1] for p in exc.value.problems]
    assert missing == [
        "localpush.cert",
        "localpush.key",
        "localpush.jwt_secret_file",
        "api.keys_file",
    ]


def test_dump_masks_proxy_credentials(cfgdir: Path) -> None:
    """check-config output never shows proxy credentials, and is valid TOML."""
    import tomllib

    text = BASE + '[apns]\nproxy = "http://user:pw@proxy.example:3128"\n'
    data = dump_config(load_config(_load(cfgdir, text), environ={}))
    assert data["apns"]["proxy"] == "http://********@proxy.example:3128"
    assert tomllib.loads(to_toml(data))["apns"]["proxy"] == data["apns"]["proxy"]


def test_example_config_is_complete() -> None:
    """etc/voipgw.toml names every setting (set, or commented out with a value)."""
    import re

    text = EXAMPLE.read_text()
    data = dump_config(load_config(EXAMPLE, environ={}))

    def keys(table: dict[str, object]) -> list[str]:
        out = []
        for k, v in table.items():
            out += keys(v) if isinstance(v, dict) else [k]  # type: ignore[arg-type]
        return out

    missing = [k for k in keys(data) if not re.search(rf"^#? ?{k} = ", text, re.M)]
    assert missing == []


def test_check_config_cli_on_example(capsys: pytest.CaptureFixture[str]) -> None:
    """`voipgw check-config` accepts the example and prints TOML and JSON."""
    import json
    import tomllib

    from gateway.cli import main

    assert main(["check-config", str(EXAMPLE)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["localpush"]["heartbeat_s"] == 30
    assert main(["check-config", "--json", str(EXAMPLE)]) == 0
    assert json.loads(capsys.readouterr().out)["calls"]["ring_timeout_s"] == 30.0


def test_check_config_cli_on_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad file: exit 1 and the problems on stderr."""
    from gateway.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[sip.udp]\nport = -1\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: sip.udp.port: must be between 0 and 65535 (got -1)" in err


def test_webhooks_section_reaches_the_sender(cfgdir: Path) -> None:
    """[webhooks] settings (and the secret file's bytes) feed the webhook sender."""
    from gateway.api._webhooks import webhook_settings

    text = BASE + (
        '[webhooks]\nenabled = true\nurl = "https://backend.example/hook"\n'
        'secret_file = "secret"\nevents = ["call.ended"]\nmax_attempts = 3\n'
    )
    settings = webhook_settings(load_config(_load(cfgdir, text), environ={}))
    assert settings is not None
    assert settings.url == "https://backend.example/hook"
    assert settings.secret == b"x" * 40
    assert settings.events == ("call.ended",)
    assert settings.max_attempts == 3
    assert webhook_settings(load_config(_load(cfgdir, BASE), environ={})) is None
