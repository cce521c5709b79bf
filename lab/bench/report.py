"""Benchmarks print their figures and keep them in docs/benchmarks.md, one section each."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent.parent / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Each section is written by `python manage.py bench <name>`, which prints the same
figures. Re-run one to refresh its section; the others are kept.
"""


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str, *, command: str) -> Path:
    """Replace the section ``name`` of docs/benchmarks.md with ``body``."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{start}\n## {name}\n\n`{command}` — {stamp}, {machine()}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    BENCHMARKS_MD.write_text(text)
    return BENCHMARKS_MD
