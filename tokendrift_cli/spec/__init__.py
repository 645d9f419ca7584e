"""Run specs: one pydantic model per concern, composed into one spec per command.

A spec is resolved in layers, later wins: the command's defaults, `--preset NAME`,
`--spec FILE`, named options, then `--set dotted.key=value` overrides. The whole result is
validated at once; every problem becomes one line naming its dotted field.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from tokendrift_cli.errors import SpecError
from tokendrift_cli.files import DuplicateKey, read_user_text, unique_keys
from tokendrift_cli.spec.base import NonEmpty, Seed, StrictModel, Threads
from tokendrift_cli.spec.data import DataSpec
from tokendrift_cli.spec.diffusion import DiffusionSpec
from tokendrift_cli.spec.drift import DriftSpec
from tokendrift_cli.spec.evaluation import EvaluationSpec
from tokendrift_cli.spec.model import BUILTIN, ModelSpec, Weights
from tokendrift_cli.spec.optim import OptimSpec
from tokendrift_cli.spec.probe import ProbeSpec
from tokendrift_cli.spec.sampling import SamplerSpec, SamplingSpec
from tokendrift_cli.spec.trap import TrapSpec

if TYPE_CHECKING:
    from importlib.abc import Traversable


class LoggingSpec(StrictModel):
    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl lines")
    eval_every: int = Field(100, ge=0, description="steps between validation NELBO runs; 0 disables")
    save_every: int = Field(100, ge=0, description="steps between checkpoints; 0 saves only at the end")
    valid_sequences: int = Field(256, ge=1, description="validation sequences scored at each evaluation")
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept on disk")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list, description="also log each metrics.jsonl line to TensorBoard or W&B through Accelerate (needs the package)")

    @field_validator("trackers")
    @classmethod
    def installed(cls, trackers: list[str]) -> list[str]:
        # Accelerate would drop a missing tracker with a warning and the run would log nowhere.
        for name in trackers:
            modules = TRACKER_MODULES[name]
            if not any(importlib.util.find_spec(module) for module in modules):
                raise ValueError(f"{name} is not installed (pip install {modules[0]})")
        return trackers


# The modules Accelerate looks for to enable each tracker.
TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


@dataclass(frozen=True)
class ModelFacts:
    """What is known of a model once it is loaded, for the spec checks that need it."""

    length: int | None  # positions the model was trained on (None: not recorded)
    vocab_size: int | None
    prompt_tokens: int = 0  # probe: the longest prompt, in tokens


def _model_facts(info: ValidationInfo) -> ModelFacts | None:
    return (info.context or {}).get("model")


def _check_sampling(sampling: SamplerSpec, nfes: list[int], nfe_field: str, model: ModelFacts | None) -> None:
    """A generated sequence fits the model, and the sampler makes at most one call per position."""
    length = model.length if model else None
    if sampling.seq_len is not None:
        if length is not None and sampling.seq_len > length:
            raise ValueError(f"sampling.seq_len: {sampling.seq_len} is above the model's length ({length})")
        length = sampling.seq_len
    if length is not None and max(nfes) > length:
        raise ValueError(f"{nfe_field}: {max(nfes)} is above the sequence length ({length}); at most one network call per position")


# The first field of every command's spec: a spec file names the command it is for.
COMMAND_HELP = "the command this spec is for (a spec file for another command is refused)"


class QualitySpec(StrictModel):
    num_samples: int = Field(256, ge=0, description="samples judged at the run's nfe before and after training; 0 skips the report")
    judge: str = Field("auto", description="'auto' (the exact oracle on the synthetic language, gpt2-large otherwise), 'oracle', or a causal LM name/path")
    batch_size: int = Field(64, ge=1, description="sequences per sampling batch")


class TrainSpec(StrictModel):
    command: Literal["train"] = Field("train", description=COMMAND_HELP)
    seed: Seed = 0
    threads: Threads = 1
    objective: Literal["diffusion", "tokendrift"] = Field(
        "tokendrift", description="'diffusion' is the matched continuation baseline; 'tokendrift' the paper's objective"
    )
    nfe: int = Field(4, ge=1, description="the fixed sampling budget the run targets: quality is reported at it, drift roll-outs use it")
    data: DataSpec = Field(default_factory=DataSpec, description="training and validation text")
    model: ModelSpec = Field(default_factory=ModelSpec, description="the denoiser: backbone, size, the checkpoint it starts from")
    diffusion: DiffusionSpec = Field(default_factory=DiffusionSpec, description="noise schedule and training times")
    drift: DriftSpec = Field(default_factory=DriftSpec, description="the TokenDrift objective (objective: tokendrift); defaults are the paper's")
    optim: OptimSpec = Field(default_factory=OptimSpec, description="optimiser, schedule and batch")
    logging: LoggingSpec = Field(default_factory=LoggingSpec, description="metrics, validation and checkpoints (may change on --resume)")
    quality: QualitySpec = Field(default_factory=QualitySpec, description="sample quality at the run's nfe, before and after training")

    @model_validator(mode="after")
    def _builtin_needs_synthetic(self) -> "TrainSpec":
        if self.model.init == BUILTIN and self.data.source != "synthetic":
            raise ValueError(f"model.init: 'builtin' is pretrained on the synthetic language, not on {self.data.source}; "
                             "give a checkpoint, or 'none' to train from scratch")
        return self

    @model_validator(mode="after")
    def fits(self, info: ValidationInfo) -> "TrainSpec":
        if self.nfe > self.data.seq_len:
            raise ValueError(f"nfe: {self.nfe} is above data.seq_len ({self.data.seq_len}); at most one network call per position")
        model = _model_facts(info)
        if model and model.length is not None and self.data.seq_len > model.length:
            raise ValueError(f"data.seq_len: {self.data.seq_len} is above the length of model.init ({model.length})")
        return self


class SampleSpec(StrictModel):
    command: Literal["sample"] = Field("sample", description=COMMAND_HELP)
    seed: Seed = 0
    threads: Threads = 1
    model: Optional[NonEmpty] = Field(
        None, description="model folder, hub name, or train run dir, or exact:mdlm / exact:duo (the synthetic language's exact denoiser); default: the latest train run"
    )
    weights: Weights = "ema"
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="how sequences are generated")

    @model_validator(mode="after")
    def fits(self, info: ValidationInfo) -> "SampleSpec":
        _check_sampling(self.sampling, [self.sampling.nfe], "sampling.nfe", _model_facts(info))
        return self


class EvalSpec(StrictModel):
    command: Literal["eval"] = Field("eval", description=COMMAND_HELP)
    seed: Seed = 0
    threads: Threads = 1
    samples: Optional[NonEmpty] = Field(None, description="samples.jsonl to judge (one {'text': ...} per line)")
    models: list[NonEmpty] = Field(
        default_factory=list, description="models or run dirs to sample and judge; exact:mdlm / exact:duo: the synthetic language's exact denoiser"
    )
    weights: Weights = "ema"
    sampling: SamplerSpec = Field(default_factory=SamplerSpec, description="how models are sampled at each NFE of evaluation.nfe")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="the judge, the metrics and the NFE sweep")

    @model_validator(mode="after")
    def fits(self, info: ValidationInfo) -> "EvalSpec":
        if self.samples is not None and not self.models and "val_ppl" in self.evaluation.metrics:
            raise ValueError("evaluation.metrics: val_ppl scores a model (--model); a samples file has none")
        if self.models or self.samples is None:  # models are sampled (without either: the latest train run)
            _check_sampling(self.sampling, self.evaluation.nfe, "evaluation.nfe", _model_facts(info))
        return self


class ProbeCommandSpec(StrictModel):
    command: Literal["probe"] = Field("probe", description=COMMAND_HELP)
    seed: Seed = 0
    threads: Threads = 1
    probe: ProbeSpec = Field(default_factory=ProbeSpec, description="the model, its prompts and the masks appended to them")

    @model_validator(mode="after")
    def fits(self, info: ValidationInfo) -> "ProbeCommandSpec":
        model, probe = _model_facts(info), self.probe
        if model is None:
            return self
        if model.length is not None and model.prompt_tokens + probe.num_masks > model.length:
            raise ValueError(
                f"probe.num_masks: {probe.num_masks} masks after a {model.prompt_tokens}-token prompt are above the model's length ({model.length})"
            )
        if model.vocab_size is None:
            return self
        if probe.mask_id is not None and probe.mask_id >= model.vocab_size:
            raise ValueError(f"probe.mask_id: {probe.mask_id} is outside the model's vocabulary ({model.vocab_size} ids)")
        outside = [i for i in probe.eos_ids if i >= model.vocab_size]
        if outside:
            raise ValueError(f"probe.eos_ids: {outside[0]} is outside the model's vocabulary ({model.vocab_size} ids)")
        if probe.top_k >= model.vocab_size:  # the mask id is never a prediction
            raise ValueError(f"probe.top_k: {probe.top_k} is above the {model.vocab_size - 1} ids the model can predict")
        return self


class TrapCommandSpec(StrictModel):
    command: Literal["marginal-trap"] = Field("marginal-trap", description=COMMAND_HELP)
    seed: Seed = 0
    threads: Threads = 1
    trap: TrapSpec = Field(default_factory=TrapSpec, description="what is decoded and how it is measured")

    @model_validator(mode="after")
    def fits(self, info: ValidationInfo) -> "TrapCommandSpec":
        model = _model_facts(info)
        if model and model.length is not None and self.trap.seq_len > model.length:
            raise ValueError(f"trap.seq_len: {self.trap.seq_len} is above the model's length ({model.length})")
        if model and model.vocab_size is not None and self.trap.top_m >= model.vocab_size:
            raise ValueError(f"trap.top_m: {self.trap.top_m} is above the {model.vocab_size - 1} ids the model can predict")
        return self


COMMAND_SPECS: dict[str, type[AnySpec]] = {
    "train": TrainSpec,
    "sample": SampleSpec,
    "eval": EvalSpec,
    "probe": ProbeCommandSpec,
    "marginal-trap": TrapCommandSpec,
}

AnySpec = Union[TrainSpec, SampleSpec, EvalSpec, ProbeCommandSpec, TrapCommandSpec]
Section = TypeVar("Section", bound=StrictModel)


def spec_field(command: str, dotted: str) -> FieldInfo:
    """The field of `command`'s spec that a dotted key (optim.lr) names."""
    model: type[StrictModel] = COMMAND_SPECS[command]
    *sections, name = dotted.split(".")
    for section in sections:
        inner = model.model_fields[section].annotation
        assert isinstance(inner, type) and issubclass(inner, StrictModel), f"{dotted}: {section} is not a section"
        model = inner
    return model.model_fields[name]


# ---------------------------------------------------------------------------- presets


def _presets() -> Traversable:
    """presets/ at the top of the repository, beside tokendrift_cli/ (a checkout or an editable
    install); a wheel carries it as tokendrift_cli/presets (pyproject.toml's package-dir)."""
    package = resources.files("tokendrift_cli")
    packaged = package / "presets"
    return packaged if packaged.is_dir() else Path(str(package)).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in _presets().iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str, given_as: str = "--preset") -> tuple[dict, str]:
    """A preset's content and its description (the first comment line of the file); `given_as`
    names where the user typed the name, for the error."""
    path = _presets() / f"{name}.yaml"
    if name not in preset_names():  # a name, never a path: ../x.yaml is no preset
        raise SpecError([f"{given_as} {name}: no such preset (available: {', '.join(preset_names())})"])
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
        if "" in key.strip().split("."):
            problems.append(f"--set {item}: the key {key.strip()!r} has an empty part; expected dotted.key=value")
            continue
        try:
            value = _set_value(COMMAND_SPECS[command], key.strip(), raw)
        except (yaml.YAMLError, DuplicateKey, RecursionError):
            problems.append(f"--set {item}: the value is not valid YAML")
            continue
        _set_dotted(merged, key.strip(), value)
    if problems:
        raise SpecError(problems)
    merged["command"] = command
    try:
        return COMMAND_SPECS[command].model_validate(merged)
    except ValidationError as err:
        raise SpecError([_describe(e, COMMAND_SPECS[command]) for e in err.errors()]) from None


def check_against_model(spec: AnySpec, model: ModelFacts) -> None:
    """Validate `spec` again now that its model is loaded (lengths, NFE, ids against the model's
    length and vocabulary), so every command checks them the same way; raises SpecError."""
    try:
        type(spec).model_validate(spec.model_dump(), context={"model": model})
    except ValidationError as err:
        raise SpecError([_describe(e, type(spec)) for e in err.errors()]) from None


def read_spec_file(path: str | Path) -> dict:
    path = Path(path)
    return _parse_mapping(read_user_text(path, "--spec"), str(path), as_json=path.suffix == ".json")


def recorded_section(spec_file: Path, section: str, model: type[Section]) -> Section:
    """One section (diffusion, data) of the spec.yaml a train run recorded, validated alone, so runs
    whose other sections have since changed still load; an invalid one is one line per problem."""
    layer = read_spec_file(spec_file).get(section, {})
    try:
        return model.model_validate(layer)
    except ValidationError as err:
        raise SpecError([f"{spec_file}: {section}.{_describe(e, model)}" for e in err.errors()]) from None


def spec_to_dict(spec: StrictModel) -> dict:
    return spec.model_dump(mode="json")


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested spec as {dotted.key: value}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _SpecLoader(yaml.SafeLoader):
    """YAML read as a spec means what it says: a key given twice is an error (PyYAML keeps the
    last), and digits are a decimal number however they start (YAML 1.1 reads 010 as octal 8,
    where --seed 010 gives 10)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise DuplicateKey(key.value, key.start_mark.line + 1)
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = str(self.construct_scalar(node)).replace("_", "")
        return int(digits, 10) if digits.lstrip("+-").isdigit() else super().construct_yaml_int(node)


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)


def _parse_mapping(text: str, source: str, as_json: bool = False) -> dict:
    try:
        data = json.loads(text, object_pairs_hook=unique_keys) if as_json else yaml.load(text, Loader=_SpecLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        line = getattr(err, "lineno", None) or getattr(getattr(err, "problem_mark", None), "line", -1) + 1
        raise SpecError([f"{source}: line {line}: not valid {'JSON' if as_json else 'YAML'}"]) from None
    except DuplicateKey as err:
        raise SpecError([f"{source}: {err}"]) from None
    except RecursionError:
        raise SpecError([f"{source}: nested too deeply to be a spec"]) from None
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


def _set_value(spec: type[StrictModel], dotted: str, raw: str) -> Any:
    """A --set value read as YAML; for a list field whose items are not text, a comma-separated
    value is the list (`--set drift.temperatures=0.1,0.2`, as named options read `--nfe 4,8`)."""
    value = yaml.load(raw, Loader=_SpecLoader) if raw.strip() else ""
    kind = bare_type(_annotation(spec, dotted))
    if isinstance(value, str) and "," in value and get_origin(kind) in (list, tuple) and bare_type(get_args(kind)[0]) is not str:
        return [yaml.load(item, Loader=_SpecLoader) for item in value.split(",") if item.strip()]
    return value


def _annotation(spec: type[StrictModel], dotted: str) -> Any:
    """The type of the field a dotted key names in `spec`, or None where it names none."""
    *sections, name = dotted.split(".")
    model: Any = spec
    for section in sections:
        field = model.model_fields.get(section)
        model = bare_type(field.annotation) if field else None
        if not (isinstance(model, type) and issubclass(model, StrictModel)):
            return None
    field = model.model_fields.get(name)
    return field.annotation if field else None


def field_names(spec: type[StrictModel], prefix: str = "") -> list[str]:
    """Every dotted field of `spec` that holds a value (not the sections)."""
    names = []
    for name, field in spec.model_fields.items():
        inner = bare_type(field.annotation)
        if isinstance(inner, type) and issubclass(inner, StrictModel):
            names += field_names(inner, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def _close_fields(field: str, names: list[str]) -> list[str]:
    """The valid fields nearest a mistyped one: whole dotted names first, then by the last part
    alone (a field typed without its section, or under the wrong one)."""
    close = difflib.get_close_matches(field, names, n=2, cutoff=0.8)
    if not close:
        leaves = difflib.get_close_matches(field.rsplit(".", 1)[-1], [n.rsplit(".", 1)[-1] for n in names], n=2, cutoff=0.8)
        close = [n for n in names if n.rsplit(".", 1)[-1] in leaves][:2]
    return close


def bare_type(annotation: Any) -> Any:
    """The type inside Optional[...] and Annotated[...]."""
    if get_origin(annotation) is Annotated:
        return bare_type(get_args(annotation)[0])
    if get_origin(annotation) is Union:
        return bare_type(next(arg for arg in get_args(annotation) if arg is not type(None)))
    return annotation


def _describe(error: ErrorDetails, spec: type[StrictModel]) -> str:
    field = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    if error["type"] == "value_error":  # our own validators' words, without pydantic's "Value error, "
        message = str(error["ctx"]["error"])
        if not field:  # a whole-spec check names its fields itself
            return message
    if error["type"] == "extra_forbidden":
        message = "unknown field"
        close = _close_fields(field, field_names(spec))
        if close:
            message += f" (did you mean {' or '.join(close)}?)"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return f"{field or 'spec'}: {message}"
