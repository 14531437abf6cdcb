"""Training: the configuration and loop, the inner attacks of adversarial training, validation."""

# the methods that live outside inner_attacks register themselves on import, before any spec is parsed
from aigrobust.training import distillation as _distillation  # noqa: F401
