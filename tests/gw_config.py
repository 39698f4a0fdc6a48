"""A minimal valid config and the files it names, for config tests."""

from __future__ import annotations

from pathlib import Path

BASE = """
[localpush]
cert = "cert.pem"
key = "key.pem"
jwt_secret_file = "secret"
[store]
path = "db/voipgw.sqlite3"
"""


def write_config_files(d: Path) -> Path:
    """A cert, private secrets, a world-readable secret and a directory in ``d``."""
    (d / "cert.pem").write_text("cert")
    for name in ("key.pem", "secret", "auth.p8"):
        (d / name).write_text("x" * 40)
        (d / name).chmod(0o600)
    (d / "open-secret").write_text("x" * 40)
    (d / "open-secret").chmod(0o644)
    (d / "adir").mkdir()
    return d
