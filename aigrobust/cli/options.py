"""Options that several commands take, declared once: the same name, type, default and help wherever they appear."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aigrobust.settings import EVAL_SETTINGS, TRAIN_SETTINGS, Setting

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DATA_DIR_HELP = ("CIFAR-10: a folder of .npz files in the shared format (else torchvision's cache); ImageNet: ROOT "
                 "with train/ and val/.")


def data_dir_option(help: str = DATA_DIR_HELP, must_be_folder: bool = False) -> Decorator:
    """``--data-dir``: where the dataset's files are."""
    return click.option("--data-dir", type=click.Path(path_type=Path, file_okay=not must_be_folder), default=None,
                        help=help)


def download_option() -> Decorator:
    """``--download``: let torchvision fetch CIFAR-10."""
    return click.option("--download", is_flag=True, help="Let torchvision download CIFAR-10 (needs a network).")


def batch_size_option(default: int = 256, help: str = "Images per forward and backward pass.") -> Decorator:
    """``--batch-size``: images per pass (records do not depend on it)."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def seed_option(setting: Setting = EVAL_SETTINGS["seed"]) -> Decorator:
    """``--seed``: a seed setting (an evaluation's by default) over the range the keyed draws take."""
    return _setting_option(setting, type=click.IntRange(0, 2**63 - 1))


def eval_option(name: str, **overrides: Any) -> Decorator:
    """The option of one evaluation setting (:mod:`aigrobust.settings`): its flag, default, choices and help from
    the one declaration; ``overrides`` add what only the command line has (a parsing type, an extra choice)."""
    return _setting_option(EVAL_SETTINGS[name], **overrides)


def train_option(name: str, **overrides: Any) -> Decorator:
    """The option of one training setting (:mod:`aigrobust.settings`), as :func:`eval_option` builds it."""
    return _setting_option(TRAIN_SETTINGS[name], **overrides)


def _setting_option(setting: Setting, **overrides: Any) -> Decorator:
    kwargs: dict[str, Any] = {"default": setting.default, "help": setting.help}
    if isinstance(setting.default, bool):
        kwargs["is_flag"] = True
    else:
        kwargs["show_default"] = True
    if isinstance(setting.default, tuple):
        kwargs["multiple"] = True
    if setting.choices:
        kwargs["type"] = click.Choice(list(setting.choices))
    return click.option(setting.option, setting.name, **{**kwargs, **overrides})


def device_option() -> Decorator:
    """``--device``: where the models run."""
    return click.option("--device", default="auto", show_default=True,
                        help="auto (cuda where available), cpu, cuda or cuda:N.")
