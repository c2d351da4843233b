"""Backbones (torchvision-compatible ResNets, or torchvision/timm models by name), projector/predictor heads and the EMA teacher."""

from matrixssl.models.heads import Predictor, Projector
from matrixssl.models.resnet import (
    BACKBONES,
    BasicBlock,
    Bottleneck,
    ResNet,
    build_backbone,
    feature_width,
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
    "feature_width",
    "cosine_momentum",
    "resnet18",
    "resnet34",
    "resnet50",
]
