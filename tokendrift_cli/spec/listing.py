"""`tokendrift spec COMMAND`: a resolved spec with every field's type, default and help.

The help is each field's pydantic description, the one the named options' --help shows too. The
YAML form carries it as comments and is a spec file: `--spec` reads it back to the same spec.
"""

from __future__ import annotations

import textwrap
import types
from typing import Annotated, Any, Iterator, Literal, Union, get_args, get_origin

import yaml
from pydantic.fields import FieldInfo

from tokendrift_cli.spec import COMMAND_SPECS, AnySpec, spec_to_dict
from tokendrift_cli.spec.base import StrictModel

FORMATS = ("yaml", "table", "json")
WIDTH = 100  # of the YAML's comment lines


def spec_fields(model: type[StrictModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo, bool]]:
    """(dotted key, field, is a section) of every field, each section before its own fields."""
    for name, field in model.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, StrictModel) else None
        yield prefix + name, field, section is not None
        if section is not None:
            yield from spec_fields(section, f"{prefix}{name}.")


def field_rows(spec: AnySpec) -> list[dict[str, Any]]:
    """One row per setting (sections left out): key, type, value, default (the command's, with no
    preset, spec file or override), help."""
    values, defaults = spec_to_dict(spec), spec_to_dict(COMMAND_SPECS[spec.command]())
    return [
        {"key": key, "type": type_text(field), "value": _lookup(values, key), "default": _lookup(defaults, key), "help": field.description}
        for key, field, section in spec_fields(type(spec)) if not section
    ]


def spec_yaml(spec: AnySpec, sources: str) -> str:
    """The spec as a YAML spec file, each section and field under its help as a comment."""
    values, defaults = spec_to_dict(spec), spec_to_dict(COMMAND_SPECS[spec.command]())
    lines = [
        f"# tokendrift {spec.command}: the resolved spec ({sources}); each field under its help, its type and default.",
        f"# Run it with: tokendrift {spec.command} --spec FILE",
        "",
    ]
    for key, field, section in spec_fields(type(spec)):
        indent = "  " * key.count(".")
        name = key.rsplit(".", 1)[-1]
        if section:
            lines += ["", *_comment(indent, str(field.description)), f"{indent}{name}:"]
            continue
        value, default = _lookup(values, key), _lookup(defaults, key)
        about = f"{type_text(field)} · default {flow(default)}"
        lines += [*_comment(indent, str(field.description)), f"{indent}# {about}", f"{indent}{name}: {flow(value)}"]
    return "\n".join(lines) + "\n"


def flow(value: Any) -> str:
    """A value as one line of YAML (flow style, quoted where YAML would misread it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def type_text(field: FieldInfo) -> str:
    """The accepted values in a few words: `int ≥ 1`, `mdlm | duo | null`, `list of float`."""
    return _type_text(field.annotation, field.metadata)


def _type_text(annotation: Any, metadata: list) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        inner = [m for item in args[1:] for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        return _type_text(args[0], [*inner, *metadata])
    if origin in (Union, types.UnionType):  # Optional[X], X | None
        return " | ".join(_type_text(arg, metadata) if arg is not type(None) else "null" for arg in args)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin is list:
        least = next((item.min_length for item in metadata if hasattr(item, "min_length")), 0)
        return f"list of {_type_text(args[0], [])}" + (f" (at least {least})" if least else "")
    if origin is tuple:
        return f"pair of {_type_text(args[0], [])}" if len(args) == 2 and args[0] == args[1] else "tuple"
    return _bounded(getattr(annotation, "__name__", str(annotation)), metadata)


# The bounds pydantic keeps in a field's metadata (annotated_types' Ge, Gt, Le, Lt), by attribute.
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _bounded(text: str, metadata: list) -> str:
    bounds = [f"{sign} {getattr(item, name)}" for item in metadata for name, sign in BOUNDS.items() if hasattr(item, name)]
    return " ".join([text, ", ".join(bounds)]) if bounds else text


def _comment(indent: str, text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ", break_on_hyphens=False)


def _lookup(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree
