"""aigrobust: adversarial-robustness evaluation of gated ResNets (ConvNet-AIG) and plain ResNets."""

from aigrobust.models import GateExecution, GateGrad, GateMode, GateTrace, ResNetBase
from aigrobust.registry import create_model, get_model_info, list_models

__version__ = "0.1.0"

__all__ = [
    "GateExecution",
    "GateGrad",
    "GateMode",
    "GateTrace",
    "ResNetBase",
    "create_model",
    "get_model_info",
    "list_models",
    "__version__",
]
