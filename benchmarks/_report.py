"""Shared header and output folder for benchmark tables (the header lives in the package, for `matrixssl bench`)."""

from __future__ import annotations

from pathlib import Path

from matrixssl.bench import machine_header as header

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS", "header", "write"]


def write(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    print(text)
    print(f"written to {path}")
    return path
