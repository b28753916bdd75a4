"""Write one benchmark's section into BENCHMARKS.md (between markers), keeping the other sections."""
from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import os

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`; each section says how it was made.\n"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = FILE.read_text() if FILE.exists() else HEADER
    stamp = dt.date.today().isoformat()
    block = f"{start}\n{body.rstrip()}\n\n_Recorded {stamp} on {machine()}._\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = FILE.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(FILE)


def publish(name: str, body: str, record: bool = True) -> None:
    """Print a benchmark's section and, unless told not to, write it into BENCHMARKS.md."""
    print(body)
    if record:
        write_section(name, body)
