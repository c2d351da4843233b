"""Reference rows for the main job: linear probe and kNN on raw pixels and on the untrained backbone.

A learnt representation is only worth something if it beats both. Same evaluation code and settings as
`matrixssl pretrain` (BatchNorm + linear probe on frozen features, weighted kNN k=20, T=0.07).

    python benchmarks/baselines.py [key=value overrides of the pretraining config]
"""

from __future__ import annotations

import argparse
import sys

from _report import header, write

from matrixssl.config import load_config
from matrixssl.data import splits_for
from matrixssl.errors import MatrixSSLError
from matrixssl.eval.baselines import reference_baselines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="overrides of the built-in pretraining config, e.g. data.dir=/data data.subset=20000",
    )
    args = parser.parse_args()
    try:
        report(args.overrides)
    except MatrixSSLError as error:  # a user mistake (bad override, missing data): one line, as the CLI does
        print(f"baselines.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def report(overrides: list[str]) -> None:
    config = load_config(None, overrides)
    rows = reference_baselines(config)
    _, labelled, test = splits_for(config.data)
    lines = [
        f"Dataset {config.data.name}: probe trained on {len(labelled)} images, tested on {len(test)}; "
        f"backbone {config.model.backbone} ({config.model.stem} stem) width {config.model.width}, "
        f"blocks/stage {config.model.blocks_per_stage}.",
        "",
        "| features | dim | linear top-1 (%) | kNN top-1 (%) | effective rank |",
        "|---|---|---|---|---|",
    ]
    for name, report in rows.items():
        lines.append(
            f"| {name} | {report['feature_dim']} | {report['linear_top1']:.2f} | {report['knn_top1']:.2f} | "
            f"{report['feature_effective_rank']:.1f} |"
        )
    write(f"{config.data.name}_baselines.md", header("Reference baselines") + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
