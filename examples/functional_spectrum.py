"""Matrix information quantities of a model's embeddings, and a plot of their spectrum.

What it shows: the functions of `matrixssl.functional` on real (B, d) embeddings. A small encoder embeds two
augmented views of a batch of toy data (`toy_data.py` beside this file); from the (d, d) covariances of the
L2-normalised embeddings it computes the matrix entropy, the matrix KL divergence and cross-entropy between
the two views, and the effective rank, once of the covariance (what this project reports) and once of the
embeddings themselves (RankMe's convention), which differ. It then plots the covariance spectra of the raw
inputs and of the embeddings, as `matrixssl rank` does for a checkpoint. Needs matplotlib (in
`pip install 'matrixssl[train]'`); drawn with the Agg backend, so no display is needed.

Run it (a few seconds)::

    python examples/functional_spectrum.py --output spectrum.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to a file; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from toy_data import augment, make_toy_data  # noqa: E402

from matrixssl.functional import (  # noqa: E402
    covariance,
    effective_rank,
    matrix_cross_entropy,
    matrix_entropy,
    matrix_kl,
)


def spectrum(covariance_matrix: Tensor) -> Tensor:
    """Eigenvalues of a covariance, largest first, normalised to sum to 1."""
    eigenvalues = torch.linalg.eigvalsh(covariance_matrix).flip(0).clamp_min(0)
    return eigenvalues / eigenvalues.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path("spectrum.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    x, _ = make_toy_data(args.batch_size, seed=args.seed)
    encoder = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, args.embedding_dim))
    with torch.no_grad():
        z_1, z_2 = encoder(augment(x)), encoder(augment(x))  # (B, d) embeddings of two views

    # Covariances of the unit-norm rows: (d, d), symmetric positive semi-definite, trace at most 1.
    c_1, c_2 = covariance(F.normalize(z_1, dim=1)), covariance(F.normalize(z_2, dim=1))
    ridge = 1e-4 * torch.eye(args.embedding_dim)  # the log needs positive definite matrices
    print(f"embeddings: {tuple(z_1.shape)}, covariance: {tuple(c_1.shape)}")
    print(f"matrix entropy ME(C1)         {float(matrix_entropy(c_1)):.4f}")
    print(f"matrix KL MKL(C1 || C2)       {float(matrix_kl(c_1 + ridge, c_2 + ridge)):.4f}")
    print(f"matrix cross-entropy MCE      {float(matrix_cross_entropy(c_1, c_2 + ridge)):.4f}")
    # Two effective ranks that are not interchangeable (see the docstring of effective_rank):
    print(f"effective rank of C1          {float(effective_rank(c_1)):.2f} / {args.embedding_dim}")
    print(f"effective rank of z1 (RankMe) {float(effective_rank(z_1)):.2f} / {args.embedding_dim}")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in (("raw inputs", covariance(x)), ("embeddings", c_1)):
        ax.semilogy(spectrum(values).numpy(), marker=".", label=name)
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("share of the variance")
    ax.set_title("covariance spectrum")
    ax.legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
