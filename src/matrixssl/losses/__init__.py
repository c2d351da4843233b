"""Drop-in loss modules: Matrix-SSL (uniformity + alignment), MEC and TCR."""

from matrixssl.losses.matrix_ssl import (
    MatrixAlignmentLoss,
    MatrixSSLLoss,
    MatrixSSLTerms,
    MatrixUniformityLoss,
)
from matrixssl.losses.mec import MECLoss
from matrixssl.losses.tcr import TCRLoss, total_coding_rate

__all__ = [
    "MECLoss",
    "MatrixAlignmentLoss",
    "MatrixSSLLoss",
    "MatrixSSLTerms",
    "MatrixUniformityLoss",
    "TCRLoss",
    "total_coding_rate",
]
