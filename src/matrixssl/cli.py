"""The `matrixssl` command: the only module that knows about everything.

User mistakes (MatrixSSLError, bad config, missing data) print one line to stderr and exit with status 2; no
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from matrixssl.bench import add_bench_command
from matrixssl.errors import MatrixSSLError
from matrixssl.eval.commands import add_eval_commands
from matrixssl.lm.commands import add_lm_commands


def _pretrain(args: argparse.Namespace) -> int:
    from matrixssl.config import load_config, to_yaml

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from matrixssl.train import pretrain

    metrics = pretrain(config, resume=args.resume)
    if metrics:
        print(json.dumps(metrics, indent=2))
        print(
            f"\n{config.loss.method} on {config.data.name}: linear probe {metrics['linear_top1']:.2f}%, "
            f"kNN (k={config.eval.knn_k}) {metrics['knn_top1']:.2f}%  ->  {Path(config.output_dir) / 'metrics.json'}"
        )
    return 0


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
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. trainer.max_epochs=5"
    )
    pretrain.set_defaults(run=_pretrain)
    add_bench_command(commands)
    add_lm_commands(commands)
    add_eval_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except MatrixSSLError as error:
        print(f"matrixssl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("matrixssl: interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
