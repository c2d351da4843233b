"""Training methods by name: one LightningModule shape, parametrised by the method's heads and loss."""

from __future__ import annotations

from matrixssl.errors import MatrixSSLError
from matrixssl.methods.barlow_twins import BarlowTwins
from matrixssl.methods.base import DatasetInfo, SSLMethod
from matrixssl.methods.byol import BYOL
from matrixssl.methods.matrix_ssl import MatrixSSL
from matrixssl.methods.mec import MEC
from matrixssl.methods.simclr import SimCLR
from matrixssl.methods.simsiam import SimSiam
from matrixssl.methods.tcr import TCR
from matrixssl.methods.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    "matrix_ssl": MatrixSSL,
    "simclr": SimCLR,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "mec": MEC,
    "tcr": TCR,
}


def method_class(name: str) -> type[SSLMethod]:
    if name not in METHODS:
        raise MatrixSSLError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "DatasetInfo", "SSLMethod", "method_class"]
