"""Model families; importing this package registers every model."""

from aigrobust.models import cifar_resnet, early_exit, imagenet_resnet  # noqa: F401  (registration side effect)
from aigrobust.models.base import ResNetBase
from aigrobust.models.gates import Gate, GateExecution, GateGrad, GateMode, GateTrace, target_rate_loss
from aigrobust.models.layers import FlopProfile, InputNormalization, ResidualBlock

__all__ = [
    "FlopProfile",
    "Gate",
    "GateExecution",
    "GateGrad",
    "GateMode",
    "GateTrace",
    "InputNormalization",
    "ResNetBase",
    "ResidualBlock",
    "target_rate_loss",
]
