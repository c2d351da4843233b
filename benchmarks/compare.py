"""The method comparison behind benchmarks/results/<dataset>.md; same as `matrixssl bench`.

python benchmarks/compare.py --dataset fashion-mnist --epochs 2 data.subset=20000
"""

from __future__ import annotations

import sys

from matrixssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
