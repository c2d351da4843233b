"""Shared header for benchmark tables: machine, versions, date and the exact command."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def header(title: str) -> str:
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    return "\n".join(
        [
            f"# {title}",
            "",
            f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
            f"- date: {datetime.date.today().isoformat()}",
            f"- machine: {device}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, torch {torch.__version__}",
            "",
            "",
        ]
    )


def write(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    print(text)
    print(f"written to {path}")
    return path
