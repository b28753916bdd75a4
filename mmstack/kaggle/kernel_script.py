"""The one script the kernel runs: :mod:`mmstack.kaggle.kernel_template` with its settings filled in."""
from __future__ import annotations

import json
from pathlib import Path

TEMPLATE = Path(__file__).with_name("kernel_template.py")
PLACEHOLDER = "SETTINGS = {}  # filled in by `mmstack kaggle package`"
CODE_FILE = "mmstack_kernel.py"
OPEN, CLOSE = 'SETTINGS = json.loads(r"""', '""")'


def render(settings: dict) -> str:
    """The template's text with ``settings`` (JSON-able) in place of its empty SETTINGS."""
    text = TEMPLATE.read_text()
    if text.count(PLACEHOLDER) != 1:
        raise RuntimeError(f"{TEMPLATE}: the SETTINGS placeholder line is missing")
    # readable JSON in a raw triple-quoted string: JSON escapes the quotes and backslashes inside its strings and
    # puts a separator between two strings, so three unescaped quotes in a row never occur in it
    body = json.dumps(settings, indent=1, ensure_ascii=False)
    return text.replace(PLACEHOLDER, f'{OPEN}\n{body}\n{CLOSE}  # written by `mmstack kaggle package`')


def read_settings(text: str) -> dict:
    """The settings a rendered script carries."""
    return json.loads(text.split(OPEN, 1)[1].split(CLOSE, 1)[0])
