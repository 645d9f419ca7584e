"""Reading the Lightning `.ckpt` files of the MDLM and DUO repositories without their libraries.

A `.ckpt` is a pickle. Besides tensors it holds the run's Hydra config as OmegaConf objects,
MDLM's tokenizer object and Lightning's loop state; unpickling those needs the libraries that
wrote them, in compatible versions, and runs their code. We need the tensors and a few config
values, so every class other than tensors and plain containers is rebuilt as an inert `Opaque`
record of its pickled state, and `plain` reads OmegaConf nodes back as dicts, lists and values.
This module is also the `pickle_module` handed to `torch.load`.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import torch

# What torch.save writes for tensors (storages are resolved by torch itself) and plain containers.
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class Opaque:
    """An object of a class we do not import: its pickled arguments, items and state; none of its code runs."""

    args: tuple[Any, ...]
    items: list[Any]
    state: Any

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.items, obj.state = args, [], None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    # Subclasses of dict and list pickle their entries as items of the object.
    def __setitem__(self, key, value) -> None:
        self.items.append((key, value))

    def append(self, value) -> None:
        self.items.append(value)

    def extend(self, values) -> None:
        self.items.extend(values)


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        return type(name, (Opaque,), {"origin": f"{module}.{name}"})


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


def read_checkpoint(path: Path) -> dict:
    """The checkpoint as a dict; raises what torch.load raises on a file that is not one."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=sys.modules[__name__])
    if not isinstance(checkpoint, dict):
        raise ValueError(f"a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def plain(value: Any) -> Any:
    """OmegaConf containers and value nodes (pickled `_content` / `_val`) as plain data; other
    opaque objects stay as they are."""
    if isinstance(value, Opaque):
        state = value.state
        if isinstance(state, dict) and "_content" in state:
            return plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return plain(state["_val"])
        return value
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
