"""Tests of `matrixssl.lm`; `run_command` runs an LM command the way the CLI parses it."""

from __future__ import annotations

import argparse


def run_command(argv: list[str]) -> int:
    """`matrixssl lm-...` parsed and run like the CLI, but with its errors raised (not turned into exit 2)."""
    from matrixssl.lm.commands import add_lm_commands

    parser = argparse.ArgumentParser(prog="matrixssl")
    add_lm_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))
