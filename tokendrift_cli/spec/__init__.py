"""Run specs: one pydantic model per concern, composed into one spec per command.

A spec is resolved in layers, later wins: the command's defaults, `--preset NAME`,
`--spec FILE`, named options, then `--set dotted.key=value` overrides. The whole result is
validated at once; every problem becomes one line naming its dotted field.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from tokendrift_cli.errors import SpecError
from tokendrift_cli.spec.base import StrictModel
from tokendrift_cli.spec.data import DataSpec
from tokendrift_cli.spec.diffusion import DiffusionSpec
from tokendrift_cli.spec.drift import DriftSpec
from tokendrift_cli.spec.evaluation import EvaluationSpec
from tokendrift_cli.spec.model import BUILTIN, ModelSpec, Weights
from tokendrift_cli.spec.optim import OptimSpec
from tokendrift_cli.spec.probe import ProbeSpec
from tokendrift_cli.spec.sampling import SamplerSpec, SamplingSpec
from tokendrift_cli.spec.trap import TrapSpec


class LoggingSpec(StrictModel):
    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl lines")
    eval_every: int = Field(100, ge=0, description="steps between validation NELBO runs; 0 disables")
    save_every: int = Field(100, ge=0, description="steps between checkpoints; 0 saves only at the end")
    valid_sequences: int = Field(256, ge=1, description="validation sequences scored at each evaluation")
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept on disk")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list, description="Accelerate trackers")


class QualitySpec(StrictModel):
    num_samples: int = Field(256, ge=0, description="samples judged at the run's nfe before and after training; 0 skips the report")
    judge: str = Field("auto", description="'auto' (the exact oracle on the synthetic language, gpt2-large otherwise), 'oracle', or a causal LM name/path")
    batch_size: int = Field(64, ge=1, description="sequences per sampling batch")


class TrainSpec(StrictModel):
    command: Literal["train"] = "train"
    seed: int = 0
    objective: Literal["diffusion", "tokendrift"] = Field(
        "tokendrift", description="'diffusion' is the matched continuation baseline; 'tokendrift' the paper's objective"
    )
    nfe: int = Field(4, ge=1, description="the fixed sampling budget the run targets: quality is reported at it, drift roll-outs use it")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    diffusion: DiffusionSpec = Field(default_factory=DiffusionSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)

    @model_validator(mode="after")
    def _builtin_needs_synthetic(self) -> "TrainSpec":
        if self.model.init == BUILTIN and self.data.source != "synthetic":
            raise ValueError(f"model.init: 'builtin' is pretrained on the synthetic language, not on {self.data.source}; "
                             "give a checkpoint, or 'none' to train from scratch")
        return self


class SampleSpec(StrictModel):
    command: Literal["sample"] = "sample"
    seed: int = 0
    model: Optional[str] = Field(None, description="model folder, hub name, or train run dir; default: the latest train run")
    weights: Weights = "ema"
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)


class EvalSpec(StrictModel):
    command: Literal["eval"] = "eval"
    seed: int = 0
    samples: Optional[str] = Field(None, description="samples.jsonl to judge (one {'text': ...} per line)")
    models: list[str] = Field(default_factory=list, description="models or run dirs to sample and judge")
    weights: Weights = "ema"
    sampling: SamplerSpec = Field(default_factory=SamplerSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)


class ProbeCommandSpec(StrictModel):
    command: Literal["probe"] = "probe"
    seed: int = 0
    probe: ProbeSpec = Field(default_factory=ProbeSpec)


class TrapCommandSpec(StrictModel):
    command: Literal["marginal-trap"] = "marginal-trap"
    seed: int = 0
    trap: TrapSpec = Field(default_factory=TrapSpec)


COMMAND_SPECS: dict[str, type[StrictModel]] = {
    "train": TrainSpec,
    "sample": SampleSpec,
    "eval": EvalSpec,
    "probe": ProbeCommandSpec,
    "marginal-trap": TrapCommandSpec,
}

AnySpec = Union[TrainSpec, SampleSpec, EvalSpec, ProbeCommandSpec, TrapCommandSpec]


# ---------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("tokendrift_cli.presets").iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> tuple[dict, str]:
    """A preset's content and its description (the first comment line of the file)."""
    path = resources.files("tokendrift_cli.presets") / f"{name}.yaml"
    if not path.is_file():
        raise SpecError([f"--preset {name}: no such preset (available: {', '.join(preset_names())})"])
    text = path.read_text()
    first = text.splitlines()[0] if text else ""
    description = first.lstrip("# ").strip() if first.startswith("#") else ""
    return _parse_mapping(text, f"preset {name}"), description


# ---------------------------------------------------------------------------- resolution


def load_spec(
    command: str,
    *,
    preset: str | None = None,
    spec_file: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> AnySpec:
    """Resolve and validate the spec of `command`; raises SpecError with one line per problem."""
    layers: list[tuple[str, dict]] = []
    if preset:
        layers.append((f"--preset {preset}", read_preset(preset)[0]))
    if spec_file:
        layers.append((f"--spec {spec_file}", read_spec_file(spec_file)))
    for source, layer in layers:
        if layer.get("command", command) != command:
            raise SpecError([f"{source}: is a spec for '{layer['command']}', not '{command}'"])

    merged: dict = {}
    for _, layer in layers:
        _deep_merge(merged, layer)
    for key, value in (options or {}).items():
        if value is not None:
            _set_dotted(merged, key, value)
    problems = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item}: expected dotted.key=value")
            continue
        _set_dotted(merged, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    if problems:
        raise SpecError(problems)
    merged["command"] = command
    try:
        return COMMAND_SPECS[command].model_validate(merged)
    except ValidationError as err:
        raise SpecError([_describe(e) for e in err.errors()]) from None


def read_spec_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"--spec {path}: file not found"])
    return _parse_mapping(path.read_text(), f"--spec {path}", as_json=path.suffix == ".json")


def spec_to_dict(spec: StrictModel) -> dict:
    return spec.model_dump(mode="json")


def _parse_mapping(text: str, source: str, as_json: bool = False) -> dict:
    try:
        data = json.loads(text) if as_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        line = getattr(err, "lineno", None) or getattr(getattr(err, "problem_mark", None), "line", -1) + 1
        raise SpecError([f"{source}: line {line}: not valid {'JSON' if as_json else 'YAML'}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError([f"{source}: expected a mapping of spec fields, got {type(data).__name__}"])
    return data


def _deep_merge(into: dict, layer: dict) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[leaf] = value


def _describe(error: dict) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "spec"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return f"{field}: {message}"
