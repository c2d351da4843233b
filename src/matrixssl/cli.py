"""The `matrixssl` command: the only module that knows about everything.

User mistakes (MatrixSSLError, bad config, missing data, a missing optional package) print one line to stderr
and exit with status 2; no traceback. Ctrl-C exits with 130 and says how to continue.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matrixssl.bench import add_bench_command
from matrixssl.errors import MatrixSSLError
from matrixssl.eval.commands import add_eval_commands
from matrixssl.lm.commands import add_lm_commands

# Which extra brings each optional top-level module (pyproject.toml's optional-dependencies and what they pull).
EXTRAS = {
    **dict.fromkeys(
        (
            "yaml",
            "lightning",
            "lightning_fabric",
            "lightning_utilities",
            "pytorch_lightning",
            "torchmetrics",
            "kornia",
            "kornia_rs",
            "PIL",
            "matplotlib",
            "tensorboard",
            "sklearn",
        ),
        "train",
    ),
    **dict.fromkeys(
        ("transformers", "accelerate", "gguf", "tokenizers", "safetensors", "reasoning_gym"), "lm"
    ),
}


def _pretrain(args: argparse.Namespace) -> int:
    from matrixssl.config import resolve_config, to_yaml

    config, switch = resolve_config(args.config, args.overrides)
    if switch is not None:
        changes = ", ".join(
            f"{key}={'null' if value is None else value}" for key, value in switch.settings.items()
        )
        print(
            f"matrixssl: loss.method={config.loss.method} brings its own settings (from "
            f"configs/{switch.source.parent.name}/{switch.source.name}): {changes}; set any of them on the "
            "command line to choose another value",
            file=sys.stderr,
        )
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from matrixssl.train import format_duration, plural, pretrain

    try:
        metrics = pretrain(config, resume=args.resume)
    except KeyboardInterrupt:
        last = Path(config.output_dir) / "checkpoints" / "last.ckpt"
        if not last.exists():
            print("matrixssl: interrupted before the first checkpoint; nothing to resume", file=sys.stderr)
            return 130
        command = ["matrixssl", "pretrain", *(["--config", str(args.config)] if args.config else [])]
        command += [*args.overrides, "--resume"]
        print(f"matrixssl: interrupted; continue with: {shlex.join(command)}", file=sys.stderr)
        return 130
    if metrics:
        length = plural(metrics["epochs"], "epoch")
        if config.trainer.max_minutes is not None:
            length = f"{config.trainer.max_minutes:g} minutes, {plural(metrics['global_step'], 'step')}"
        title = f"{config.loss.method} on {config.data.name}, {length}"
        print(summary(title, config.eval.knn_k, metrics, format_duration))
    return 0


def summary(title: str, knn_k: int, metrics: dict[str, Any], duration: Callable[[float], str]) -> str:
    """The end of a run: its numbers and where everything went, as a short table (all of it is in metrics.json)."""
    run = Path(metrics["checkpoint"]).parent.parent
    rows = [
        ("linear probe, test top-1", f"{metrics['linear_top1']:.2f} %"),
        (f"kNN (k={knn_k}), test top-1", f"{metrics['knn_top1']:.2f} %"),
        ("feature effective rank", f"{metrics['feature_effective_rank']:.1f} of {metrics['feature_dim']}"),
        ("time", duration(metrics["wall_time_s"])),
        ("metrics", str(run / "metrics.json")),
        ("checkpoint", metrics["checkpoint"]),
        ("plots", ", ".join(metrics.get("plots", {}).values())),
        ("logs", metrics["logs"]),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{title} ({metrics['precision']}):", *(f"  {name:<{width}}  {value}" for name, value in rows)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matrixssl", description="Self-supervised learning with matrix information theory"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser(
        "pretrain", help="pretrain a backbone, then evaluate it (linear probe, kNN)"
    )
    pretrain.add_argument(
        "--config",
        type=Path,
        help="YAML config, e.g. configs/cifar10/matrix_ssl.yaml (default: the quick Fashion-MNIST run)",
    )
    pretrain.add_argument(
        "--resume", action="store_true", help="continue from output_dir/checkpoints/last.ckpt"
    )
    pretrain.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    pretrain.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. trainer.max_epochs=5; loss.method=NAME also brings that method's own "
        "settings from its shipped config (e.g. vicreg: LARS, base_lr 0.2) unless they are given here too",
    )
    pretrain.set_defaults(run=_pretrain)
    add_bench_command(commands)
    add_lm_commands(commands)
    add_eval_commands(commands)
    return parser


def missing_extra(error: ModuleNotFoundError, command: str) -> str | None:
    """The one-line message for an optional package that is not installed, None for any other missing module
    (a bug, which keeps its traceback)."""
    module = (error.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return (
        f"`matrixssl {command}` needs the {extra} extra (module {module!r} is not installed): "
        f"pip install 'matrixssl[{extra}]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except MatrixSSLError as error:
        print(f"matrixssl: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        message = missing_extra(error, args.command)
        if message is None:
            raise
        print(f"matrixssl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("matrixssl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
