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
    for path, what in (
        (config.localpush.jwt_secret_file, "device JWT secret"),
        (config.api.keys_file, "control API key"),
    ):
        if path is not None and not path.exists():
            _write_private(path, secrets.token_urlsafe(48) + "\n")
            made.append(path)
            # The path only: the secret itself never goes to the log.
            log.warn("dev_mode: generated {what} in {path}", what=what, path=str(path))
    return made


def _write_private(path: Path, text: str) -> None:
    """Create a file readable by its owner only, from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def read_jwt_secret(path: Path) -> bytes:
    """The secret file's bytes, trailing newline stripped (localpush.md)."""
    data = path.read_bytes().rstrip(b"\r\n")
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{path}: device JWT secret must hold at least {MIN_SECRET_BYTES} bytes"
        )
    return data
