"""The one script the kernel runs: :mod:`mmstack.kaggle.kernel_template` with its settings filled in."""
from __future__ import annotations

import ast
import json
from pathlib import Path

TEMPLATE = Path(__file__).with_name("kernel_template.py")
PLACEHOLDER = "SETTINGS = {}  # filled in by `mmstack kaggle package`"
CODE_FILE = "mmstack_kernel.py"


def render(settings: dict) -> str:
    """The template's text with ``settings`` (JSON-able) in place of its empty SETTINGS."""
    text = TEMPLATE.read_text()
    if text.count(PLACEHOLDER) != 1:
        raise RuntimeError(f"{TEMPLATE}: the SETTINGS placeholder line is missing")
    literal = f"SETTINGS = json.loads({json.dumps(json.dumps(settings, indent=1, ensure_ascii=False), ensure_ascii=False)})"
    return text.replace(PLACEHOLDER, literal)


def read_settings(text: str) -> dict:
    """The settings a rendered script carries."""
    prefix = "SETTINGS = json.loads("
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return json.loads(ast.literal_eval(line[len(prefix):-1]))
