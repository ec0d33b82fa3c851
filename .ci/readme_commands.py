#!/usr/bin/env python3
"""Print the shell commands of README.md's quick start, one per line.

The quick start is the first fenced ``bash`` block after the ``## Quick start``
heading. Comment lines and blank lines are dropped; a line ending in a backslash
continues on the next. CI runs exactly these commands, so the README cannot drift
from what is tested. Exits non-zero when the block is missing or holds no command.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADING = "## Quick start"


def quick_start_commands(markdown: str) -> list[str]:
    """The commands of the first ```bash block under the quick-start heading."""
    start = markdown.find(HEADING)
    if start < 0:
        raise ValueError(f"no {HEADING!r} heading")
    section = markdown[start + len(HEADING):]
    next_heading = re.search(r"^## ", section, re.MULTILINE)
    if next_heading:
        section = section[: next_heading.start()]
    block = re.search(r"^```bash\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    if block is None:
        raise ValueError(f"no ```bash block under {HEADING!r}")
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        commands.append(pending + stripped)
        pending = ""
    if pending:
        raise ValueError("the last command ends in a line continuation")
    if not commands:
        raise ValueError(f"the ```bash block under {HEADING!r} holds no command")
    return commands


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "README.md"
    try:
        commands = quick_start_commands(path.read_text())
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    for command in commands:
        print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
