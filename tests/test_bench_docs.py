"""bench/_docs.py: each benchmark rewrites only its own section."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

from _docs import write_section


def test_sections_are_replaced_in_place_or_appended(tmp_path: Path) -> None:
    """A section is replaced where it stands; others keep their text and order."""
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## A\n\nold a\n\n## B\n\nb stays\n")
    write_section("## A", "## A\n\nnew a\n", docs)
    write_section("## C", "## C\n\nc\n", docs)
    assert docs.read_text() == (
        "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb stays\n\n## C\n\nc\n"
    )
    write_section("## B", "## B\n\nb new\n", docs)
    assert "b stays" not in docs.read_text()
    assert docs.read_text().index("## A") < docs.read_text().index("## B")
