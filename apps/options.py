"""Command-line options generated from configuration dataclasses, so each option is defined once.

A config field ``densify_grad_threshold: float = 2e-4`` with ``metadata={"help": ...}`` becomes
``--densify-grad-threshold``. Options default to "not given" so that each model's dataclass keeps its
own defaults; ``config_from_args`` fills a dataclass from what the user gave.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> Any:
    """The argparse type of an annotation such as ``float``, ``int | None``, ``str``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:  # Optional[X] / X | None
        return _scalar_type(args[0])
    if annotation in (int, float, str):
        return annotation
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return str


def add_config_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one option per field of dataclass ``cls`` (fields already registered are left alone)."""
    hints = typing.get_type_hints(cls)
    known = {a.dest for a in parser._actions}  # argument groups share their parser's action list
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in known or f.metadata.get("cli") is False:
            continue
        annotation = hints[f.name]
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help strings
        if f.default is not dataclasses.MISSING:
            help_text += f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _scalar_type(annotation)
            literal = [a for a in [annotation] if typing.get_origin(a) is typing.Literal]
            if literal:
                kwargs["choices"] = list(typing.get_args(literal[0]))
        parser.add_argument(_flag(f.name), **kwargs)


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build dataclass ``cls`` from the options the user gave, keeping its defaults for the rest."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    given.update({k: v for k, v in overrides.items() if k in names})
    return cls(**given)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--backend``, read back by ``select_device``."""
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--backend", choices=("torch", "triton", "cuda"), default=None,
                        help="kernel backend (default: per kernel and device; same as RECON_BACKEND)")


def select_device(args: argparse.Namespace):
    """The torch device of ``--device`` (cuda when available, else cpu), after applying ``--backend``."""
    import os

    import torch

    if getattr(args, "backend", None):
        os.environ["RECON_BACKEND"] = args.backend
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
