"""End to end on a tiny Fashion-MNIST-format dataset: pretrain, evaluate, resume after a kill, bad input.

Each run trains a few steps of a very small ResNet; what is checked is behaviour (files, epochs, steps,
messages, exit codes), not accuracy.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, mnist_like, override, write_idx_split
from lightning.pytorch.loggers import wandb as lightning_wandb

from matrixssl.cli import main
from matrixssl.config import load_config
from matrixssl.losses import MatrixSSLLoss
from matrixssl.methods import base
from matrixssl.methods.matrix_ssl import MatrixSSL
from matrixssl.plots import read_epoch_curves
from matrixssl.train import TimeBudget, log_histories, training_precision


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_idx_split(root / "fashion-mnist", "train", *mnist_like(64, 0), gz=True)
    write_idx_split(root / "fashion-mnist", "test", *mnist_like(32, 1), gz=True)
    return root


def args(data_dir: Path, output: Path, *extra: str) -> list[str]:
    return ["pretrain", *TINY, f"data.dir={data_dir}", f"output_dir={output}", *extra]


def test_pretrain_writes_metrics_checkpoints_and_logs(
    data_dir: Path, tmp_path: Path, capsys, recwarn: pytest.WarningsRecorder
) -> None:
    output = tmp_path / "run"
    lightning_log = _Recorder()
    logging.getLogger("lightning.pytorch").addHandler(lightning_log)
    try:
        assert main(args(data_dir, output, "trainer.max_epochs=2")) == 0
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(lightning_log)
    printed = capsys.readouterr().out
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("linear_top1", "knn_top1", "checkpoint", "logs", "feature_effective_rank"):
        assert key in metrics
    assert 0.0 <= metrics["linear_top1"] <= 100.0 and 0.0 <= metrics["knn_top1"] <= 100.0
    assert metrics["epochs"] == 2 and metrics["global_step"] == 2 * (64 // 16)
    assert (output / "checkpoints" / "last.ckpt").exists()
    assert (output / "checkpoints" / "epoch=1.ckpt").exists()
    assert not list((output / "checkpoints").glob(".*.tmp"))
    logged = (Path(metrics["logs"]) / "metrics.csv").read_text()
    assert "train/loss_epoch" in logged and "train/effective_rank" in logged and "val/probe_top1" in logged
    # What the user reads: a header, one line per epoch (stdout is not a terminal here), a short summary.
    lines = printed.splitlines()
    assert lines[0].startswith("pretraining matrix_ssl on fashion-mnist (64 images): 2 epochs of 4 steps")
    assert lines[1].startswith("epoch 1/2, loss ") and lines[2].startswith("epoch 2/2, loss ")
    assert "online probe test top-1" in lines[2] and "effective rank" in lines[2]
    assert lines[3] == f"matrix_ssl on fashion-mnist, 2 epochs ({metrics['precision']}):"
    assert f"linear probe, test top-1  {metrics['linear_top1']:.2f} %" in printed
    assert f"kNN (k=20), test top-1    {metrics['knn_top1']:.2f} %" in printed
    assert f"metrics                   {output / 'metrics.json'}" in printed
    assert len(lines) == 12 and "feature_spectrum" not in printed  # not the whole metrics.json
    # and nothing else: no tips, deprecations, logging-interval or empty-legend warnings.
    assert not [record.getMessage() for record in lightning_log.records]
    assert not [str(warning.message) for warning in recwarn], [str(w.message) for w in recwarn]


class _Recorder(logging.Handler):
    """Keeps the records Lightning's loggers let through."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_resume_after_kill_neither_repeats_nor_loses_epochs(data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    command = [sys.executable, "-m", "matrixssl.cli", *args(data_dir, output, "trainer.max_epochs=4")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "killed_run.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        # last.ckpt is renamed into place after the epoch checkpoint, so once it exists it is complete. The
        # epoch's row of the CSV log is written just after it (Lightning logs epoch means after its epoch-end
        # callbacks): the kill waits for both, as a kill between the two would lose that row from the curves.
        last = output / "checkpoints" / "last.ckpt"
        log_csv = output / "logs" / "version_0" / "metrics.csv"

        def epoch_done() -> bool:
            try:
                return last.exists() and "train/loss_epoch" in read_epoch_curves(log_csv)
            except (OSError, ValueError):  # not written yet, or caught half-written
                return False

        deadline = time.monotonic() + 240
        while not epoch_done() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert last.exists(), f"no checkpoint appeared; the run's stderr ends with:\n{log.read_text()[-2000:]}"
    killed_at = torch.load(last, weights_only=False)["epoch"]
    assert killed_at < 3, "the run finished before it could be killed; nothing was tested"
    assert main(args(data_dir, output, "trainer.max_epochs=4", "--resume")) == 0
    final = torch.load(output / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["epoch"] == 3 and final["global_step"] == 4 * (64 // 16)
    assert json.loads((output / "metrics.json").read_text())["epochs"] == 4
    # The curves join the killed run's log and the resumed one's: one history, every epoch once.
    curves = read_epoch_curves(*log_histories(output))
    assert [epoch for epoch, _ in curves["train/loss_epoch"]] == [0, 1, 2, 3]
    # Resuming the finished run only evaluates it again, with the same result.
    before = json.loads((output / "metrics.json").read_text())
    assert main(args(data_dir, output, "trainer.max_epochs=4", "--resume")) == 0
    after = json.loads((output / "metrics.json").read_text())
    assert (after["linear_top1"], after["global_step"]) == (before["linear_top1"], before["global_step"])


def test_resume_under_other_settings_is_refused(data_dir: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=1")) == 0
    capsys.readouterr()
    # A finished run left by another config (here: another gamma) must not be continued as if it were this one.
    assert main(args(data_dir, output, "trainer.max_epochs=2", "loss.gamma=0.5", "--resume")) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (loss.gamma: 1.0 -> 0.5)" in err and err.count("\n") == 1
    # More epochs, another precision or other evaluation settings are fine.
    extended = ["trainer.max_epochs=2", "trainer.precision=32-true", "eval.knn_k=5", "--resume"]
    assert main(args(data_dir, output, *extended)) == 0
    assert json.loads((output / "metrics.json").read_text())["epochs"] == 2
    capsys.readouterr()
    # A run from before a setting existed cannot be continued: its value then is unknown.
    saved = output / "config.yaml"
    original = saved.read_text()
    saved.write_text(original.replace("  online_uniformity: 0.3\n", ""))
    assert main(args(data_dir, output, "trainer.max_epochs=2", "--resume")) == 2
    err = capsys.readouterr().err
    assert "from an older matrixssl, made before the setting(s) loss.online_uniformity existed" in err
    assert err.count("\n") == 1
    saved.write_text("- not\n- a config\n")
    assert main(args(data_dir, output, "trainer.max_epochs=2", "--resume")) == 2
    assert "config.yaml is not a config written by matrixssl" in capsys.readouterr().err


def test_user_mistakes_exit_2_with_one_message(data_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    override(monkeypatch, "fashion-mnist", system_dir=None)  # the machine's own copy must not be found
    cases = [
        (args(data_dir, tmp_path / "a", "data.nme=1"), "unknown config key 'data.nme'"),
        (args(data_dir, tmp_path / "b", "data.batch_size=-3"), "must be positive"),
        (args(data_dir, tmp_path / "c", "data.name=imagenet21k"), "unknown dataset"),
        (args(tmp_path / "nowhere", tmp_path / "d"), "apt-get install dataset-fashion-mnist"),
        (args(data_dir, tmp_path / "e", "--resume"), "no checkpoint"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_corrupt_and_mismatched_checkpoints_are_refused(data_dir: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=1")) == 0
    last = output / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    assert main(args(data_dir, output, "trainer.max_epochs=2", "model.width=0.25", "--resume")) == 2
    assert "other settings (model.width: 0.125 -> 0.25)" in capsys.readouterr().err
    (output / "config.yaml").unlink()  # without the run's settings, the weights themselves are compared
    assert main(args(data_dir, output, "trainer.max_epochs=2", "model.width=0.25", "--resume")) == 2
    assert "different model configuration" in capsys.readouterr().err
    last.write_bytes(good[: len(good) // 3])
    assert main(args(data_dir, output, "trainer.max_epochs=2", "--resume")) == 2
    assert "corrupt or unreadable" in capsys.readouterr().err
    assert main(args(data_dir, output, "trainer.max_epochs=2")) == 2
    assert "already holds a run" in capsys.readouterr().err


class _Payload:
    """Unpickling this runs code: it creates the file named `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=1")) == 0
    last = output / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    marker = tmp_path / "code-ran"
    state["hyper_parameters"]["payload"] = _Payload(marker)
    torch.save(state, last)
    for argv in (args(data_dir, output, "trainer.max_epochs=2", "--resume"), ["knn", str(last)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "corrupt or unreadable" in err and "Traceback" not in err and err.count("\n") == 1
        assert not marker.exists()


def test_non_finite_loss_stops_with_the_step_and_last_checkpoint(
    data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    real_terms = MatrixSSLLoss.multi_view_terms

    def poisoned(self, *views):  # type: ignore[no-untyped-def]
        terms = real_terms(self, *views)
        return terms._replace(loss=terms.loss * float("nan"))

    monkeypatch.setattr(MatrixSSLLoss, "multi_view_terms", poisoned)
    assert main(args(data_dir, tmp_path / "run", "trainer.max_epochs=1")) == 2
    err = capsys.readouterr().err
    assert "the loss became non-finite (NaN/Inf) by step 0" in err and "last good checkpoint: none yet" in err
    assert "start a new run in another output_dir" in err and "Traceback" not in err


def test_a_loss_gone_non_finite_between_checks_is_caught_before_the_checkpoint(
    data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Checked after steps 2, 5, ... (every 3), a NaN at step 3, the last of a 4-step epoch, still stops the
    run before the epoch's checkpoint (with the Taylor log, which has no eigendecomposition to fail first on
    the NaN weights)."""
    real_terms = MatrixSSLLoss.multi_view_terms
    calls = {"n": 0}

    def poisoned_from_step_3(self, *views):  # type: ignore[no-untyped-def]
        terms = real_terms(self, *views)
        calls["n"] += 1
        return terms._replace(loss=terms.loss * float("nan")) if calls["n"] == 4 else terms

    monkeypatch.setattr(MatrixSSLLoss, "multi_view_terms", poisoned_from_step_3)
    output = tmp_path / "run"
    settings = (
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=3",
        "loss.taylor_order=4",
        "loss.ridge=1.0",
    )
    assert main(args(data_dir, output, *settings)) == 2
    err = capsys.readouterr().err
    assert "the loss became non-finite (NaN/Inf) by step 4 (epoch 0" in err and "none yet" in err
    assert not (output / "checkpoints" / "last.ckpt").exists()


def test_the_logged_effective_rank_is_the_one_of_its_step(
    data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The step's diagnostics run at the batches after which Lightning writes the logs (steps 2 and 5 of 8 at
    an interval of 3), so each written effective rank was computed at the step it is written with."""
    computed: list[float] = []
    real_rank = base.effective_rank

    def recorded(matrix: torch.Tensor) -> torch.Tensor:
        rank = real_rank(matrix)
        computed.append(rank.item())
        return rank

    monkeypatch.setattr(base, "effective_rank", recorded)
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=2", "trainer.log_every_n_steps=3")) == 0
    with open(output / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["train/effective_rank"]]
    assert [int(row["step"]) for row in rows] == [2, 5]
    assert [float(row["train/effective_rank"]) for row in rows] == pytest.approx(computed, rel=1e-6)


def test_diverged_weights_stop_with_the_step_not_a_traceback(data_dir: Path, tmp_path: Path, capsys) -> None:
    # An absurd learning rate turns the weights into Inf/NaN after the first update.
    assert main(args(data_dir, tmp_path / "run", "trainer.max_epochs=1", "optim.base_lr=1.0e+30")) == 2
    err = capsys.readouterr().err
    assert "the loss became non-finite (NaN/Inf) by step" in err and "Traceback" not in err


def test_loss_settings_rejected_by_the_loss_are_one_line(data_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(args(data_dir, tmp_path / "run", "loss.ridge=0", "loss.taylor_order=null")) == 2
    err = capsys.readouterr().err
    assert "config key 'loss.ridge': ridge must be > 0 for the exact matrix log" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "capabilities,expected",
    [({"avx512_bf16": True}, "bf16-mixed"), ({"amx_bf16": True}, "bf16-mixed"), ({"avx2": True}, "32-true")],
)
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch, capabilities, expected) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert training_precision(load_config(None, ["trainer.accelerator=cpu"])) == expected
    explicit = load_config(None, ["trainer.accelerator=cpu", "trainer.precision=32-true"])
    assert training_precision(explicit) == "32-true"


@pytest.mark.parametrize("bf16,expected", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_precision_on_a_gpu_is_bf16_or_else_fp16(monkeypatch, bf16, expected) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert training_precision(load_config(None, ["trainer.accelerator=auto"])) == expected
    assert training_precision(load_config(None, ["trainer.accelerator=gpu"])) == expected


def test_bf16_mixed_training_runs_and_is_recorded(data_dir: Path, tmp_path: Path) -> None:
    # On a CPU without native bf16 this is emulated: slower, but it must still train and evaluate.
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=1", "trainer.precision=bf16-mixed")) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["precision"] == "bf16-mixed" and metrics["global_step"] == 64 // 16
    assert 0.0 <= metrics["linear_top1"] <= 100.0


def test_multi_crop_feeds_local_views_to_the_loss(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    original = MatrixSSL.loss_from_views

    def recording(self: MatrixSSL, online: list[torch.Tensor], teacher: list[torch.Tensor]) -> Any:
        seen.append((len(online), len(teacher), tuple(online[-1].shape)))
        return original(self, online, teacher)

    monkeypatch.setattr(MatrixSSL, "loss_from_views", recording)
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=1", "data.local_views=2")) == 0
    assert seen and all(entry == (4, 2, (16, 16)) for entry in seen)  # 2 views + 2 local, 2 teachers
    assert json.loads((output / "metrics.json").read_text())["global_step"] == 64 // 16


def test_ctrl_c_exits_130_with_the_command_that_resumes(
    data_dir: Path, tmp_path: Path, capsys, monkeypatch, request: pytest.FixtureRequest
) -> None:
    # Python's own Ctrl-C handler, whatever the shell left: `make test &` starts pytest with SIGINT ignored.
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, found))
    real = MatrixSSL.loss_from_views
    calls = {"n": 0, "interrupt_at": 6}  # epoch 0 has 4 steps: its checkpoint exists at step 6

    def interrupted(self: MatrixSSL, *views: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == calls["interrupt_at"]:
            raise KeyboardInterrupt
        return real(self, *views)

    monkeypatch.setattr(MatrixSSL, "loss_from_views", interrupted)
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=3")) == 130
    err = capsys.readouterr().err
    assert err.endswith(
        f"matrixssl: interrupted; continue with: matrixssl pretrain {' '.join(TINY)} "
        f"data.dir={data_dir} output_dir={output} trainer.max_epochs=3 --resume\n"
    ), err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN undone
    monkeypatch.setattr(MatrixSSL, "loss_from_views", real)
    assert main(args(data_dir, output, "trainer.max_epochs=3", "--resume")) == 0
    assert json.loads((output / "metrics.json").read_text())["epochs"] == 3

    calls.update(n=0, interrupt_at=1)
    monkeypatch.setattr(MatrixSSL, "loss_from_views", interrupted)
    assert main(args(data_dir, tmp_path / "early", "trainer.max_epochs=1")) == 130
    assert "interrupted before the first checkpoint; nothing to resume" in capsys.readouterr().err


def test_a_text_file_as_last_checkpoint_is_named_as_such(data_dir: Path, tmp_path: Path, capsys) -> None:
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_text("not a checkpoint\n")
    assert main(args(data_dir, tmp_path / "run", "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{last} is a text file, not a checkpoint" in err and err.count("\n") == 1


def _stand_in_wandb(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A `wandb` module that records what W&B would receive; Lightning's check of the installed package is
    bypassed, the rest of its WandbLogger is real."""
    runs: list[Any] = []

    class Run:
        def __init__(self, **init: Any) -> None:
            self.init, self.logged, self.hyperparameters = init, [], {}
            self.id = self.name = "stand-in"
            self.config = types.SimpleNamespace(
                update=lambda values, **_: self.hyperparameters.update(values)
            )

        def log(self, metrics: dict[str, Any]) -> None:
            self.logged.append(dict(metrics))

        def define_metric(self, *args: Any, **kwargs: Any) -> None:
            pass

    def init(**kwargs: Any) -> Run:
        runs.append(Run(**kwargs))
        return runs[-1]

    wandb = types.ModuleType("wandb")
    wandb.run, wandb.init = None, init  # type: ignore[attr-defined]
    lib, wandb_run = types.ModuleType("wandb.sdk.lib"), types.ModuleType("wandb.wandb_run")
    lib.RunDisabled, wandb_run.Run = type("RunDisabled", (), {}), Run  # type: ignore[attr-defined]
    for name, module in (
        ("wandb", wandb),
        ("wandb.sdk", types.ModuleType("wandb.sdk")),
        ("wandb.sdk.lib", lib),
        ("wandb.wandb_run", wandb_run),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(lightning_wandb, "_WANDB_AVAILABLE", True)
    return runs


def test_wandb_logger_logs_offline_unless_told_otherwise(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    runs = _stand_in_wandb(monkeypatch)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_epochs=1", "trainer.logger=wandb")) == 0
    assert os.environ["WANDB_MODE"] == "offline"
    (run,) = runs
    assert run.init["dir"] == str(output) and run.init["project"] == "matrixssl"
    assert run.hyperparameters["config"]["trainer"]["logger"] == "wandb"
    assert any("train/loss_epoch" in logged for logged in run.logged)
    assert (output / "logs").is_dir() and not (output / "tensorboard").exists()  # CSV stays, for the plots
    # A mode the user chose is kept.
    monkeypatch.setenv("WANDB_MODE", "online")
    assert main(args(data_dir, tmp_path / "online", "trainer.max_epochs=1", "trainer.logger=wandb")) == 0
    assert os.environ["WANDB_MODE"] == "online" and len(runs) == 2


def test_wandb_logger_not_installed_is_one_line(data_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(args(data_dir, tmp_path / "run", "trainer.logger=wandb")) == 2
    err = capsys.readouterr().err
    assert "trainer.logger=wandb needs the wandb package: pip install wandb" in err and err.count("\n") == 1


def test_a_minutes_budget_plans_the_schedule_for_the_steps_that_fit(
    data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    # A clock that moves one second per reading: the budget reads it at the start (0 s) and at the end of
    # every step of its timed window (steps 3 to 23: 1 s to 21 s), so a step "takes" 1 s and 30 s of budget
    # leave 9 s: 9 more steps after the 3 untimed and 20 timed ones.
    ticks = iter(range(1000))
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: float(next(ticks))))
    output = tmp_path / "run"
    assert main(args(data_dir, output, "trainer.max_minutes=0.5")) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        "pretraining matrix_ssl on fashion-mnist (64 images): 0.5 minutes of steps (schedules planned after "
        "the first steps; 4 steps per epoch)"
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["global_step"] == 32 and metrics["steps_per_epoch"] == 4
    assert "matrix_ssl on fashion-mnist, 0.5 minutes, 32 steps (" in printed
    last = torch.load(output / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["planned_steps"] == 32
    # The cosine schedule was planned for those 32 steps: it ends at zero.
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-9)
    # Resumed, the run keeps its plan (it neither times itself again nor trains on).
    (output / "metrics.json").unlink()
    assert main(args(data_dir, output, "trainer.max_minutes=0.5", "--resume")) == 0
    assert json.loads((output / "metrics.json").read_text())["global_step"] == 32


def test_a_minutes_budget_plans_from_the_median_step(monkeypatch) -> None:
    """Five of the twenty timed steps slowed by other work on the machine do not shorten the plan."""
    steps = [0.5] * 3 + [0.5, 3.0] * 5 + [0.5] * 10  # the 3 untimed steps, then the timed window
    readings = [0.0, *itertools.accumulate(steps)]  # the start, then the end of every step
    kept = iter([readings[0], *readings[3:]])  # the budget reads its clock from the third step's end on
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(kept)))
    loop = types.SimpleNamespace(max_steps=-1)
    trainer = types.SimpleNamespace(
        global_step=0,
        strategy=types.SimpleNamespace(broadcast=lambda value, src: value),
        fit_loop=types.SimpleNamespace(epoch_loop=loop),
    )
    module = types.SimpleNamespace(planned_steps=None)
    budget = TimeBudget(minutes=1.0)
    budget.on_train_start(trainer, module)
    for step in range(1, 24):
        trainer.global_step = step
        budget.on_train_batch_end(trainer, module)
    # 24 s spent (23 steps, five of them 3 s); 36 s left at the median 0.5 s: 72 more steps (the mean,
    # 1.125 s, would have planned 32)
    assert readings[-1] == 24.0 and module.planned_steps == loop.max_steps == 23 + 72


def test_a_minutes_budget_must_be_positive(data_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(args(data_dir, tmp_path / "run", "trainer.max_minutes=0")) == 2
    assert "config key 'trainer.max_minutes' must be positive, got 0" in capsys.readouterr().err
