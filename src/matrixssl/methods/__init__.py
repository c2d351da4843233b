"""Training methods by name: one LightningModule shape, parametrised by the method's heads and loss.

`build_method` is the one public way to get a model from a config: it checks what needs both the config and
the registry (the method's name, whether it takes local views) and turns a loss or model rejecting its
settings into one message that names the config section to fix.
"""

from __future__ import annotations

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.errors import MatrixSSLError
from matrixssl.methods.barlow_twins import BarlowTwins
from matrixssl.methods.base import SSLMethod
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


def check_method(config: Config) -> type[SSLMethod]:
    """The configured method's class, once the config asks nothing of it that it cannot do."""
    method = method_class(config.loss.method)
    if config.data.local_views and not method.supports_local_views:
        takes = sorted(name for name, cls in METHODS.items() if cls.supports_local_views)
        raise MatrixSSLError(
            f"data.local_views (multi-crop) is implemented for {', '.join(takes)}, not {config.loss.method}; "
            "set data.local_views=0"
        )
    return method


def build_method(config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> SSLMethod:
    """The configured method for data described by `info`, with schedules sized for `steps_per_epoch`."""
    method = check_method(config)
    try:
        return method(config, info=info, steps_per_epoch=steps_per_epoch)
    except MatrixSSLError:
        raise
    except ValueError as error:  # a loss or a head rejecting a value: say which config key it came from
        raise MatrixSSLError(f"{_config_key(config, str(error))}: {error}") from None


def _config_key(config: Config, message: str) -> str:
    """ "config key 'loss.<method>.<name>'" when the message starts with a name of the method's config section
    (Matrix-SSL's keys are loss.*), else the sections to look at."""
    name, method = message.split(" ", 1)[0], config.loss.method
    section, prefix = (
        (config.loss, "loss")
        if method == "matrix_ssl"
        else (getattr(config.loss, method, None), f"loss.{method}")
    )
    if section is not None and hasattr(section, name):
        return f"config key '{prefix}.{name}'"
    return f"invalid settings for {method} (see the config's loss and model sections)"


__all__ = ["METHODS", "SSLMethod", "build_method", "check_method", "method_class"]
