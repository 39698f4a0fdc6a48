"""``voipgw``: check a config, make a dev certificate, mint a device token.

For operators and for integrators' first steps; the gateway itself runs
under ``twistd voipgw``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, dump_config, load_config

__all__ = ["main", "to_toml"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voipgw`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        return int(handler(args))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voipgw", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
    )
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print JSON, not TOML")
    check.set_defaults(handler=_check_config)

    cert = sub.add_parser("dev-cert", help="write a self-signed TLS cert and key")
    cert.add_argument("dir", type=Path)
    cert.add_argument(
        "--name",
        action="append",
        default=None,
        help="DNS name or IP address (repeatable; default localhost, 127.0.0.1, ::1)",
    )
    cert.set_defaults(handler=_dev_cert)

    token = sub.add_parser("device-token", help="mint a device JWT (localpush.md)")
    token.add_argument("--config", required=True, type=Path)
    token.add_argument("--device-id", required=True)
    token.add_argument("--aor", required=True, action="append", help="AOR (repeatable)")
    token.add_argument("--ttl", type=int, default=86400, help="seconds (default 1 day)")
    token.set_defaults(handler=_device_token)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    data = dump_config(config)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(to_toml(data), end="")
    return 0


def _dev_cert(args: argparse.Namespace) -> int:
    from gateway.devcert import DEFAULT_NAMES, write_self_signed

    names = tuple(args.name) if args.name else DEFAULT_NAMES
    cert, key = args.dir / "cert.pem", args.dir / "key.pem"
    write_self_signed(cert, key, names)
    print(f"wrote {cert} and {key} (self-signed for {', '.join(names)})")
    return 0


def _device_token(args: argparse.Namespace) -> int:
    from gateway.devfiles import prepare_dev_files, read_jwt_secret
    from gateway.devicetoken import DEVICE_ID_RE, mint_device_token

    config = load_config(args.config)
    path = config.localpush.jwt_secret_file
    if path is None:
        print("localpush.jwt_secret_file is not configured", file=sys.stderr)
        return 1
    if not DEVICE_ID_RE.fullmatch(args.device_id):
        print(
            "--device-id must be 1 to 128 characters of [A-Za-z0-9._:-]",
            file=sys.stderr,
        )
        return 1
    if args.ttl <= 0:
        print("--ttl must be a positive number of seconds", file=sys.stderr)
        return 1
    prepare_dev_files(config)
    try:
        secret = read_jwt_secret(path)
    except (OSError, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(
        mint_device_token(
            secret, args.device_id, args.aor, now=time.time(), ttl_s=args.ttl
        )
    )
    return 0


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Serialise plain config data (scalars, lists, nested tables) as TOML
    that ``tomllib`` reads back as the same data."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((f"{prefix}{_toml_key(key)}", value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        out += f"\n[{name}]\n" + to_toml(table, f"{name}.")
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # inf, -inf and nan are TOML's spellings too
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A TOML basic string. Not ``json.dumps``: JSON writes characters past
    U+FFFF as surrogate pairs, which TOML refuses, and leaves DEL bare."""
    return '"' + _TOML_ESCAPE.sub(_escape, text) + '"'


_TOML_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return "\\" + char if char in '"\\' else f"\\u{ord(char):04x}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
