"""The datasets aigrobust knows by name: what a model is trained and evaluated on. A light leaf, so the command
line offers them without loading torch; :mod:`aigrobust.data` loads them."""

DATASETS = ("cifar10", "imagenet", "foolbox-cifar10", "foolbox-imagenet")  # what models are trained and evaluated on
