"""Drop-in loss modules: Matrix-SSL (uniformity + alignment), MEC, TCR and the classic baselines."""

from matrixssl.losses._inputs import EmbeddingLoss
from matrixssl.losses.barlow_twins import BarlowTwinsLoss
from matrixssl.losses.byol import BYOLLoss
from matrixssl.losses.matrix_ssl import (
    MatrixAlignmentLoss,
    MatrixSSLLoss,
    MatrixSSLTerms,
    MatrixUniformityLoss,
)
from matrixssl.losses.mec import MECLoss
from matrixssl.losses.simclr import NTXentLoss
from matrixssl.losses.simsiam import SimSiamLoss
from matrixssl.losses.tcr import TCRLoss, total_coding_rate
from matrixssl.losses.vicreg import VICRegLoss, VICRegTerms

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "EmbeddingLoss",
    "MECLoss",
    "MatrixAlignmentLoss",
    "MatrixSSLLoss",
    "MatrixSSLTerms",
    "MatrixUniformityLoss",
    "NTXentLoss",
    "SimSiamLoss",
    "TCRLoss",
    "VICRegLoss",
    "VICRegTerms",
    "total_coding_rate",
]
