"""Writing a benchmark's figures into its own section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, text: str, path: Path = DOCS) -> Path:
    """Replace the ``heading`` section (up to the next ``## ``), or append it.

    The file is read fresh, so sections other benchmarks wrote stay as they
    are. ``text`` starts with the heading line itself.
    """
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = current.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    if start is None:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
            len(lines),
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    path.write_text(new)
    return path
