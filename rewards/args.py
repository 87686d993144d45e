"""Build an argparse parser from a CleanRL-style `@dataclass Args` (help text in field metadata)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Sequence, TypeVar

T = TypeVar("T")


def arg(default, help: str, **kwargs):
    """A dataclass field that carries its command-line help text."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def add_dataclass_arguments(parser: argparse.ArgumentParser, args_cls: type) -> None:
    """One `--flag` per field: bools become --flag/--no-flag, lists take several values."""
    hints = typing.get_type_hints(args_cls)
    for field in dataclasses.fields(args_cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind = hints[field.name]
        origin = typing.get_origin(kind)
        options: dict = {"default": default, "help": f"{help_text} (default: {default})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            options.update(nargs="+", type=typing.get_args(kind)[0])
        else:
            optional = [a for a in typing.get_args(kind) if a is not type(None)]
            options["type"] = optional[0] if optional else kind
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
        parser.add_argument(flag, dest=field.name, **options)


def parse_args(args_cls: type[T], argv: Sequence[str] | None = None, description: str = "") -> T:
    """Parse `argv` into an `args_cls` instance (for entry points that run on their own)."""
    parser = argparse.ArgumentParser(description=description or args_cls.__doc__)
    add_dataclass_arguments(parser, args_cls)
    return args_cls(**vars(parser.parse_args(argv)))


def from_namespace(args_cls: type[T], namespace: argparse.Namespace) -> T:
    """Pick `args_cls`'s fields out of a parsed namespace (the CLI's subcommands share one)."""
    return args_cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(args_cls)})
