"""`torch.compile` of the networks a job runs, in place, where the machine can compile.

`Module.compile()` compiles a module's call without wrapping it, so parameter names, state
dicts, checkpoints and Accelerate's wrappers stay exactly what an eager run has (no
`_orig_mod.` prefix). Compiled and eager runs draw the same random numbers (dropout included):
inductor is told to call torch's own random kernels rather than its own generator.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from tokendrift_cli.errors import first_line
from tokendrift_cli.spec.base import Compile


def wanted(setting: Compile, device: torch.device) -> bool:
    """What `auto` means: compile on CUDA, stay eager on CPU, where a run as long as the default
    one does not win back the compile time (docs/results.md, "Speed and memory")."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can."""
    if sys.platform == "win32":
        return "torch.compile's inductor backend does not run on Windows"
    from torch._dynamo.eval_frame import is_dynamo_supported

    if not is_dynamo_supported():
        return f"torch {torch.__version__} cannot compile under Python {sys.version.split()[0]}"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "no usable Triton for this GPU (pip install triton)"
    if device.type != "cpu":
        return f"compilation is only set up for CPU and CUDA, not {device.type}"
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # inductor's own search: $CXX, else g++ (clang++ on macOS)
        return f"no C++ compiler for the CPU backend ({first_line(err)}; install g++ or set CXX)"
    return None


def compile_modules(modules: list[nn.Module], setting: Compile, device: torch.device, field: str, note: Callable[[str], None]) -> None:
    """Compile `modules` in place when `setting` (the spec's `field`) asks for it and the machine
    can; where compilation was asked for (explicitly or by `auto`) and cannot run, `note` gets the
    one line saying why they stay eager."""
    if not wanted(setting, device):
        return
    reason = unavailable(device)
    if reason:
        note(f"{field}: running eager: {reason}")
        return
    import torch._inductor.config

    torch._inductor.config.fallback_random = True  # the same dropout draws as eager: runs compare and resume across
    for module in modules:
        module.compile()


def adamw(parameters, device: torch.device, **settings) -> torch.optim.AdamW:
    """AdamW whose update is one fused kernel on CPU and CUDA: the same arithmetic as torch's
    default (a dozen passes over every weight), at a third of its time on the small model's
    170M weights, where those passes took a third of a CPU step (docs/results.md)."""
    return torch.optim.AdamW(parameters, fused=device.type in ("cpu", "cuda"), **settings)
