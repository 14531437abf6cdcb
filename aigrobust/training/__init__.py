"""Training: the configuration and loop, the inner attacks of adversarial training, validation."""
