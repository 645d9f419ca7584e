"""The `tokendrift` command line: options → validated spec → run directory → job → table / JSON.

Exit codes: 0 success, 1 the job failed, 2 bad usage or invalid input (one line per problem).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup
from typing_extensions import Annotated

from tokendrift_cli.errors import InputError, JobError, SpecError
from tokendrift_cli.ui import UI

# Typer raises Click's exceptions (from its own copy of Click in recent versions); BadParameter,
# which every version exports, leads to the base class of them all.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _App(TyperGroup):
    """Every invocation, the entry point's or a test's in-process one: the libraries' chatter is
    quieted, and Click's usage errors (unknown option, not a number) are one `error:` line like
    every other error, not a boxed usage text."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        _quiet_libraries()
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as err:
            if type(err).__name__ != "NoArgsIsHelpError":  # `tokendrift` alone: the help is printed already
                command = err.ctx.command_path if getattr(err, "ctx", None) else "tokendrift"
                UI().error(f"{command}: {' '.join(err.format_message().split())} (see {command} --help)")
            sys.exit(err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _quiet_libraries() -> None:
    # Our output is the tables and the JSON; progress bars and warnings of the libraries are noise.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


app = typer.Typer(
    cls=_App,
    name="tokendrift",
    help="Train, sample, evaluate and probe discrete diffusion language models (MDLM, DUO) with TokenDrift.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _path(value: str) -> Path:
    if not value.strip():  # Path("") is the current folder: never what an empty value meant
        raise typer.BadParameter("empty path")
    return Path(value)


# Options every command shares. Named options of a command map onto dotted spec fields.
Preset = Annotated[Optional[str], typer.Option("--preset", help="Start from a shipped preset (see `tokendrift presets`).")]
SpecFile = Annotated[Optional[Path], typer.Option("--spec", parser=_path, help="Start from a spec file (YAML or JSON), e.g. runs/x/spec.yaml.")]
Overrides = Annotated[Optional[list[str]], typer.Option("--set", help="Override a spec field: dotted.key=value (repeatable; wins over everything).")]
Out = Annotated[Optional[Path], typer.Option("--out", parser=_path, help="Run directory (default: runs/<command>-<timestamp>).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed of the run.")]
Json = Annotated[bool, typer.Option("--json", help="Print the final result as one JSON object on stdout, nothing else.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print no progress or tables.")]


def _execute(
    command: str,
    *,
    preset: str | None,
    spec_file: Path | None,
    overrides: list[str] | None,
    out: Path | None,
    json_mode: bool,
    quiet: bool,
    options: dict[str, Any],
    resume: bool = False,
) -> None:
    """Resolve the spec, open the run directory, write spec.yaml, run the job, report."""
    from tokendrift_cli.runs import RunDir, default_run_path
    from tokendrift_cli.spec import load_spec, spec_to_dict

    ui = UI(json_mode=json_mode, quiet=quiet)
    try:
        spec = load_spec(command, preset=preset, spec_file=spec_file, options=options, overrides=overrides)
        job = _job_module(command)
        with RunDir(out or default_run_path(command), resume=resume) as run:
            if resume:  # before spec.yaml is rewritten: a refused resume leaves the run as it was
                job.check_resume(spec, run)
            run.write_yaml("spec.yaml", spec_to_dict(spec))
            result = job.run(spec, run, ui)
            result = {"run_dir": str(run.path), **result}
            run.write_json("results.json", result)
    except SpecError as err:
        for problem in err.problems:
            ui.error(problem)
        raise typer.Exit(2)
    except InputError as err:
        ui.error(str(err))
        raise typer.Exit(2)
    except JobError as err:
        ui.error(str(err))
        raise typer.Exit(1)
    except KeyboardInterrupt:
        ui.error("interrupted; completed checkpoints and written files are kept")
        raise typer.Exit(130)
    if json_mode:
        ui.print_json(result)


JOB_MODULES = {"train": "train", "sample": "sample", "eval": "evaluate", "probe": "probe", "marginal-trap": "marginal_trap"}


def _job_module(command: str):
    name = JOB_MODULES[command]
    try:
        return importlib.import_module(f"tokendrift_cli.jobs.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"tokendrift_cli.jobs.{name}":
            raise
        raise JobError(f"`tokendrift {command}` is not implemented yet") from None


@app.command()
def train(
    backbone: Annotated[Optional[str], typer.Option(help="Diffusion backbone: mdlm (masked) or duo (uniform-state).")] = None,
    init: Annotated[Optional[str], typer.Option(help="Checkpoint to continue from: hub name, local folder or train run dir; 'builtin' (default): the toolkit's pretrained tiny model; 'none': from scratch.")] = None,
    objective: Annotated[Optional[str], typer.Option(help="diffusion (the matched baseline) or tokendrift.")] = None,
    nfe: Annotated[Optional[int], typer.Option(help="The fixed NFE the run targets: quality before/after is reported at it (drift roll-outs use it too).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimiser steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per optimiser step (global).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    resume: Annotated[Optional[Path], typer.Option(parser=_path, help="Resume the run in this directory from its latest checkpoint.")] = None,
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    out: Out = None,
    seed: Seed = None,
    json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a diffusion LM: plain diffusion loss or the TokenDrift objective."""
    if resume is not None:
        if out is not None and Path(out) != resume:
            UI().error("--resume DIR continues in DIR; drop --out or make it the same directory")
            raise typer.Exit(2)
        if spec is None and preset is None:
            spec = resume / "spec.yaml"
        out = resume
    _execute(
        "train", preset=preset, spec_file=spec, overrides=set_, out=out, json_mode=json, quiet=quiet,
        resume=resume is not None,
        options={
            "seed": seed, "model.backbone": backbone, "model.init": init, "objective": objective,
            "nfe": nfe, "optim.max_steps": max_steps, "optim.batch_size": batch_size, "optim.lr": lr,
        },
    )


@app.command()
def sample(
    model: Annotated[Optional[str], typer.Option(help="Model folder, hub name, or train run dir (default: the latest run under runs/).")] = None,
    nfe: Annotated[Optional[int], typer.Option(help="Network calls per sequence.")] = None,
    num_samples: Annotated[Optional[int], typer.Option(help="Number of sequences.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per batch.")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per sequence (default: the model's training length).")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Softmax temperature of the denoiser.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling mass.")] = None,
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    out: Out = None,
    seed: Seed = None,
    json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Generate samples at a fixed number of network calls (NFE)."""
    _execute(
        "sample", preset=preset, spec_file=spec, overrides=set_, out=out, json_mode=json, quiet=quiet,
        options={
            "seed": seed, "model": model, "sampling.nfe": nfe, "sampling.num_samples": num_samples,
            "sampling.batch_size": batch_size, "sampling.seq_len": seq_len,
            "sampling.temperature": temperature, "sampling.top_p": top_p,
        },
    )


@app.command(name="eval")
def eval_(
    samples: Annotated[Optional[str], typer.Option(help="samples.jsonl to judge (one {'text': ...} per line).")] = None,
    model: Annotated[Optional[list[str]], typer.Option(help="Model or run dir to sample and judge (repeatable).")] = None,
    runs: Annotated[Optional[list[str]], typer.Option(help="Train run dirs to compare (repeatable).")] = None,
    nfe: Annotated[Optional[str], typer.Option(help="Comma-separated NFE sweep, e.g. 4,8,16,32.")] = None,
    genppl_model: Annotated[Optional[str], typer.Option(help="Judge: a causal LM name/path (gpt2-large) or 'oracle'.")] = None,
    metrics: Annotated[Optional[str], typer.Option(help="Comma-separated: genppl,entropy,val_ppl,ngram_jsd.")] = None,
    num_samples: Annotated[Optional[int], typer.Option(help="Samples per model and NFE.")] = None,
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    out: Out = None,
    seed: Seed = None,
    json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Judge samples: Gen.-PPL, entropy, validation perplexity, n-gram JSD, NFE sweeps."""
    models = [*(model or []), *(runs or [])] or None
    _execute(
        "eval", preset=preset, spec_file=spec, overrides=set_, out=out, json_mode=json, quiet=quiet,
        options={
            "seed": seed, "samples": samples, "models": models, "evaluation.nfe": _csv(nfe),
            "evaluation.genppl_model": genppl_model, "evaluation.metrics": _csv(metrics),
            "sampling.num_samples": num_samples,
        },
    )


@app.command()
def probe(
    prompts: Annotated[Optional[str], typer.Option(help="JSONL file, one {'prompt': ...} per line.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="A single prompt text.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Masked diffusion model: name, folder or train run dir.")] = None,
    num_masks: Annotated[Optional[int], typer.Option(help="Mask tokens appended to the prompt.")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Predictions kept per masked position.")] = None,
    num_prompts: Annotated[Optional[int], typer.Option(help="Use at most this many prompts.")] = None,
    chat_template: Annotated[Optional[str], typer.Option(help="auto, on or off.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Prompts per forward pass.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Model dtype: float32, bfloat16 or float16.")] = None,
    from_lima: Annotated[Optional[str], typer.Option(help="Build the prompts from a local LIMA train.jsonl.")] = None,
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    out: Out = None,
    seed: Seed = None,
    json: Json = False,
    quiet: Quiet = False,
) -> None:
    """One forward pass over a prompt plus N masks: top-k per masked position, aggregated."""
    _execute(
        "probe", preset=preset, spec_file=spec, overrides=set_, out=out, json_mode=json, quiet=quiet,
        options={
            "seed": seed, "probe.prompts": prompts, "probe.prompt": prompt, "probe.model": model,
            "probe.num_masks": num_masks, "probe.top_k": top_k, "probe.num_prompts": num_prompts,
            "probe.chat_template": chat_template, "probe.batch_size": batch_size, "probe.dtype": dtype,
            "probe.from_lima": from_lima,
        },
    )


@app.command(name="marginal-trap")
def marginal_trap(
    mode: Annotated[Optional[str], typer.Option(help="exact (the synthetic language's own conditionals) or model.")] = None,
    joint: Annotated[Optional[str], typer.Option(help='JSON file of a tiny joint, e.g. {"I like": 0.5, "he likes": 0.5}.')] = None,
    model: Annotated[Optional[str], typer.Option(help="Masked model for --mode model: folder or train run dir.")] = None,
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    out: Out = None,
    seed: Seed = None,
    json: Json = False,
    quiet: Quiet = False,
) -> None:
    """How far parallel decoding from per-token marginals is from the joint ("I likes tennis")."""
    _execute(
        "marginal-trap", preset=preset, spec_file=spec, overrides=set_, out=out, json_mode=json, quiet=quiet,
        options={"seed": seed, "trap.mode": mode, "trap.joint": joint, "trap.model": model},
    )


@app.command()
def presets(
    name: Annotated[Optional[str], typer.Argument(help="Show this preset's content.")] = None,
    json: Json = False,
) -> None:
    """List the shipped presets, or show one."""
    from tokendrift_cli.spec import preset_names, read_preset

    ui = UI(json_mode=json)
    try:
        if name is None:
            result: Any = {"presets": []}
            for preset_name in preset_names():
                content, description = read_preset(preset_name)
                result["presets"].append({"name": preset_name, "command": content.get("command"), "description": description})
            rows = result["presets"]
            ui.table("presets", rows, ["name", "command", "description"])
        else:
            content, description = read_preset(name)
            result = {"name": name, "description": description, "spec": content}
            import yaml

            ui.console.print(f"[bold]{name}[/]: {description}\n" + yaml.safe_dump(content, sort_keys=False), highlight=False)
    except SpecError as err:
        for problem in err.problems:
            ui.error(problem)
        raise typer.Exit(2)
    if json:
        ui.print_json(result)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [item.strip() for item in value.split(",") if item.strip()]


def main() -> None:
    app(prog_name="tokendrift")


if __name__ == "__main__":
    sys.exit(main())
