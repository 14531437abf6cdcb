"""aigrobust: adversarial-robustness evaluation of gated ResNets (ConvNet-AIG) and plain ResNets.

Names are imported on first use, so ``import aigrobust`` (and the command line's ``--help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AigrobustError": "aigrobust.errors",
    "DynamicNetwork": "aigrobust.models.dynamic",
    "GatedAdapter": "aigrobust.models.dynamic",
    "EarlyExitAdapter": "aigrobust.models.dynamic",
    "GateExecution": "aigrobust.models.gates",
    "GateGrad": "aigrobust.models.gates",
    "GateMode": "aigrobust.models.gates",
    "GateTrace": "aigrobust.models.gates",
    "PlainModel": "aigrobust.models.adapter",
    "ResNetBase": "aigrobust.models.base",
    "as_evaluable": "aigrobust.models.adapter",
    "normalized": "aigrobust.models.adapter",
    "Summary": "aigrobust.api",
    "create_model": "aigrobust.models.factory",
    "evaluate": "aigrobust.api",
    "get_model_info": "aigrobust.models.registry",
    "list_models": "aigrobust.models.registry",
    "list_pretrained": "aigrobust.models.registry",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aigrobust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
