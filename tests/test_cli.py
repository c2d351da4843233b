"""The command line itself: what `--print-config` shows, and one line naming the extra to install when an
optional package is missing (a core-only install simulated in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from matrixssl.cli import EXTRAS, main


def test_print_config_shows_the_switched_methods_own_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--print-config", "loss.method=vicreg"]) == 0
    captured = capsys.readouterr()
    shown = yaml.safe_load(captured.out)
    assert shown["loss"]["method"] == "vicreg"
    assert (shown["optim"]["optimizer"], shown["optim"]["base_lr"]) == ("lars", 0.2)
    assert shown["output_dir"] == "runs/fashion-mnist-vicreg"
    note = captured.err
    assert note.count("\n") == 1 and "configs/fashion-mnist/vicreg.yaml" in note
    assert "optim.optimizer=lars" in note and "optim.base_lr=0.2" in note

    # Set on the command line, a value stays the user's and is not announced.
    assert main(["pretrain", "--print-config", "optim.base_lr=0.1", "loss.method=vicreg"]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out)["optim"]["base_lr"] == 0.1 and "base_lr" not in captured.err


def test_print_config_keeps_device_counts_as_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--print-config", "trainer.devices=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["devices"] == 3
    assert main(["pretrain", "--print-config", "trainer.devices=0,1"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["devices"] == "0,1"


# Runs `main` on each command line with every module of the extras made unimportable, as in an install of the
# core alone (torch and numpy); prints [exit status, stderr] per command as JSON.
CORE_ONLY = """
import contextlib, io, json, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from matrixssl.cli import main
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_a_core_only_install_names_the_extra_each_command_needs(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "run.ckpt")
    commands = {
        "train": [
            ["pretrain", "--print-config"],
            ["pretrain", f"output_dir={tmp_path / 'run'}"],
            ["bench", "--epochs", "1", f"--runs={tmp_path / 'bench'}"],
            ["linear", checkpoint],
            ["knn", checkpoint],
            ["finetune", checkpoint],
            ["rank", checkpoint],
            ["export", checkpoint, str(tmp_path / "backbone.pth")],
        ],
        "lm": [
            ["lm-finetune", "--steps", "1", "--output-dir", str(tmp_path / "lm")],
            ["lm-eval", "--n", "2", "--output-dir", str(tmp_path / "lm-eval")],
        ],
    }
    argvs = [argv for group in commands.values() for argv in group]
    process = subprocess.run(
        [sys.executable, "-c", CORE_ONLY, ",".join(EXTRAS), json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    results = iter(json.loads(process.stdout))
    for extra, group in commands.items():
        for argv in group:
            code, err = next(results)
            assert code == 2, (argv, err)
            assert f"pip install 'matrixssl[{extra}]'" in err and err.count("\n") == 1, (argv, err)
            assert "Traceback" not in err

    # Help needs nothing beyond the core.
    helped = subprocess.run(
        [sys.executable, "-c", CORE_ONLY, ",".join(EXTRAS), json.dumps([["--help"], ["pretrain", "--help"]])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(helped.stdout) == [[0, ""], [0, ""]]
