"""Backbones (torchvision-compatible ResNets), projector/predictor heads and the EMA teacher."""

from matrixssl.models.heads import Predictor, Projector
from matrixssl.models.resnet import (
    BACKBONES,
    BasicBlock,
    Bottleneck,
    ResNet,
    build_backbone,
    resnet18,
    resnet34,
    resnet50,
)
from matrixssl.models.teacher import EMATeacher, cosine_momentum

__all__ = [
    "BACKBONES",
    "BasicBlock",
    "Bottleneck",
    "EMATeacher",
    "Predictor",
    "Projector",
    "ResNet",
    "build_backbone",
    "cosine_momentum",
    "resnet18",
    "resnet34",
    "resnet50",
]
