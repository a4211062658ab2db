"""Declaring a trainer's options: dataclass fields whose metadata ``apps/options.py`` turns into CLI flags."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help_text: str, **extra: Any) -> Any:
    """A dataclass field with ``default`` whose command-line help is ``help_text`` (``extra``: more metadata)."""
    return field(default=default, metadata={"help": help_text, **extra})
