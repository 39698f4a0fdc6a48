"""Files that ``dev_mode`` creates on first start so the example runs as is."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from twisted.logger import Logger

from gateway.config import Config
from gateway.devcert import write_self_signed

__all__ = ["MIN_SECRET_BYTES", "prepare_dev_files", "read_jwt_secret"]

MIN_SECRET_BYTES = 32
log = Logger()


def prepare_dev_files(config: Config) -> list[Path]:
    """Generate missing dev certificates and the device JWT secret."""
    if not config.dev_mode:
        return []
    made: list[Path] = []
    for cert, key in config.dev_files():
        write_self_signed(cert, key)
        made += [cert, key]
        log.warn("dev_mode: generated self-signed certificate {cert}", cert=str(cert))
    secret = config.localpush.jwt_secret_file
    if secret is not None and not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
        made.append(secret)
        log.warn("dev_mode: generated device JWT secret {path}", path=str(secret))
    return made


def read_jwt_secret(path: Path) -> bytes:
    """The secret file's bytes, trailing newline stripped (localpush.md)."""
    data = path.read_bytes().rstrip(b"\r\n")
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{path}: device JWT secret must hold at least {MIN_SECRET_BYTES} bytes"
        )
    return data
