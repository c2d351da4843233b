"""Training methods by name: one LightningModule shape, parametrised by the method's heads and loss."""

from __future__ import annotations

from matrixssl.errors import MatrixSSLError
from matrixssl.methods.base import DatasetInfo, SSLMethod
from matrixssl.methods.matrix_ssl import MatrixSSL

METHODS: dict[str, type[SSLMethod]] = {"matrix_ssl": MatrixSSL}


def method_class(name: str) -> type[SSLMethod]:
    if name not in METHODS:
        raise MatrixSSLError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "DatasetInfo", "SSLMethod", "method_class"]
