"""The example config, copied into a scratch tree for tests that run it."""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "voipgw.toml"

# Every listener on an ephemeral port so tests never collide.
EPHEMERAL = {
    "VOIPGW_SIP__UDP__PORT": "0",
    "VOIPGW_SIP__TCP__PORT": "0",
    "VOIPGW_LOCALPUSH__PORT": "0",
    "VOIPGW_API__PORT": "0",
}


def example_in(root: Path) -> Path:
    """``root/etc/voipgw.toml``: its relative paths put var/ under ``root``."""
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE, etc / "voipgw.toml")
    return etc / "voipgw.toml"
