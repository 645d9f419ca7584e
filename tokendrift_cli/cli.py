"""The `tokendrift` command line: options → validated spec → run directory → job → table / JSON.

Exit codes: 0 success, 1 the job failed, 2 bad usage or invalid input (one line per problem).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from typer.core import TyperGroup
from typing_extensions import Annotated

from tokendrift_cli.errors import InputError, JobError, SpecError
from tokendrift_cli.ui import UI

# Typer raises Click's exceptions (from its own copy of Click in recent versions); BadParameter,
# which every version exports, leads to the base class of them all.
# Found at run time, so its type (which module's class) is unknown to mypy: Any.
ClickException: type[Any] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _App(TyperGroup):
    """Every invocation, the entry point's or a test's in-process one: the libraries' chatter is
    quieted, and Click's usage errors (unknown option, not a number) are one `error:` line like
    every other error, not a boxed usage text."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        _quiet_libraries()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
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
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from tokendrift_cli import __version__

        print(f"tokendrift {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Train, sample, evaluate and probe discrete diffusion language models (MDLM, DUO) with TokenDrift."""


def _path(value: str) -> Path:
    if not value.strip():  # Path("") is the current folder: never what an empty value meant
        raise typer.BadParameter("empty path")
    return Path(value)


# Options every command shares, besides its spec fields: where the spec starts, where the run goes, how it reports.
Preset = Annotated[Optional[str], typer.Option("--preset", help="Start from a shipped preset (see `tokendrift presets`).")]
SpecFile = Annotated[Optional[Path], typer.Option("--spec", parser=_path, help="Start from a spec file (YAML or JSON), e.g. runs/x/spec.yaml.")]
Overrides = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a spec field: dotted.key=value (repeatable; wins over everything). `tokendrift spec COMMAND` lists every field."
)]
Out = Annotated[Optional[Path], typer.Option("--out", parser=_path, help="Run directory (default: runs/<command>-<timestamp>).")]
Json = Annotated[bool, typer.Option("--json", help="Print the final result as one JSON object on stdout, nothing else.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print no progress or tables.")]
Resume = Annotated[Optional[Path], typer.Option("--resume", parser=_path, help="Resume the run in this directory from its latest checkpoint.")]


def _execute(
    command: str,
    options: dict[str, Any],
    *,
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    out: Out = None,
    json: Json = False,
    quiet: Quiet = False,
    resume: Resume = None,
) -> None:
    """Resolve the spec, open the run directory, write spec.yaml, run the job, report.

    Under several processes (torchrun, accelerate launch) only the main process prints: the one
    result, its tables and any error. `train` runs on every process; the other commands run on the
    main process only, and the others end at once."""
    import torch

    from tokendrift_cli.runs import RESULTS, SPEC, Run, RunDir, default_run_path, is_main_process, process_count
    from tokendrift_cli.spec import load_spec, spec_to_dict

    main = is_main_process()
    if not main and command != "train":
        return
    ui = UI(json_mode=json, quiet=quiet, main_process=main)
    if resume is not None:  # the run goes on in its folder, from its own spec unless another is given
        if out is not None and out != resume:
            ui.error("--resume DIR continues in DIR; drop --out or make it the same directory")
            raise typer.Exit(2)
        if spec is None and preset is None and Run(resume).file(SPEC).is_file():  # without one, RunDir says there is no run
            spec = Run(resume).file(SPEC)
        out = resume
    run: RunDir | None = None
    try:
        with _bad_input_exits(ui):
            if out is None and process_count() > 1:
                raise InputError("--out: required when several processes train (each would pick its own timestamped folder)")
            resolved = load_spec(command, preset=preset, spec_file=spec, options=options, overrides=set_)
            job = _job_module(command)
            with RunDir(out or default_run_path(command), resume=resume is not None) as run:
                if resume is not None:  # before spec.yaml is rewritten: a refused resume leaves the run as it was
                    job.check_resume(resolved, run)
                run.write_yaml(SPEC, spec_to_dict(resolved))
                if resolved.threads:
                    torch.set_num_threads(resolved.threads)
                result = job.run(resolved, run, ui)
                result = {"run_dir": str(run.path), **result}
                run.write_json(RESULTS, result)
                if run.is_main:
                    ui.note(_outputs(run.path))
    except JobError as err:
        ui.error(str(err))
        raise typer.Exit(1)
    except KeyboardInterrupt:
        if run is not None and run.kept:
            ui.error(f"interrupted; {run.path} keeps its completed checkpoints and written files")
        else:  # taken back (RunDir): the same command can start there again
            ui.error("interrupted before the run kept anything; its folder is as it was")
        raise typer.Exit(130)
    if json:
        ui.print_json(result)


def _outputs(folder: Path) -> str:
    """Where the run's files are: the last line a command prints (not on stdout under --json)."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    return f"outputs in {folder}/: {', '.join(entries)}"


@contextmanager
def _bad_input_exits(ui: UI) -> Iterator[None]:
    """Bad input inside: its lines on stderr, exit 2 (for the commands that run no job)."""
    try:
        yield
    except SpecError as err:
        for problem in err.problems:
            ui.error(problem)
        raise typer.Exit(2)
    except InputError as err:
        ui.error(str(err))
        raise typer.Exit(2)


JOB_MODULES = {"train": "train", "sample": "sample", "eval": "evaluate", "probe": "probe", "marginal-trap": "marginal_trap"}


def _job_module(command: str):
    name = JOB_MODULES[command]
    try:
        return importlib.import_module(f"tokendrift_cli.jobs.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"tokendrift_cli.jobs.{name}":
            raise
        raise JobError(f"`tokendrift {command}` is not implemented yet") from None


# ---------------------------------------------------------------------------- commands from the specs

# Flags not named after their field: eval's models are given one at a time, as --model or --runs.
FLAGS = {"models": ("--model", "--runs")}


def _spec_command(command: str, help: str, fields: list[str], *, resumable: bool = False) -> None:
    """Register `tokendrift <command>`: a named option for each dotted spec field in `fields` (and
    seed and threads), then the options every command shares (_execute's). Flag, help, type and default of a
    named option are its field's; every other field is reached with --set."""
    from tokendrift_cli.spec import spec_field

    named = {dotted.replace(".", "__"): dotted for dotted in [*fields, "seed", "threads"]}  # parameter name → field
    shared = [
        parameter for name, parameter in inspect.signature(_execute, eval_str=True).parameters.items()
        if name not in ("command", "options") and (resumable or name != "resume")
    ]

    def callback(ctx: typer.Context, **values: Any) -> None:
        options = {}
        for name, dotted in named.items():
            value = values.pop(name)
            source = ctx.get_parameter_source(name)
            assert source is not None  # Click records where each parameter it parsed came from
            if source.name != "DEFAULT":  # left out: the preset's or spec file's value stays
                options[dotted] = value
        _execute(command, options, **values)

    # inspect.signature (and so Typer) reads __signature__ from any callable; typeshed's functions lack it.
    callback.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *(_option(name, dotted, spec_field(command, dotted)) for name, dotted in named.items()),
        *shared,
    ])
    app.command(name=command, help=help)(callback)


def _option(name: str, dotted: str, field: FieldInfo) -> inspect.Parameter:
    """The named option of a field. A choice is read as text, which the spec checks (so its error
    names the field); a list of names or paths repeats its flag (a path may hold a comma), any other
    list is one comma-separated value (--nfe 4,8,16)."""
    from tokendrift_cli.spec import bare_type

    if field.description is None:
        raise TypeError(f"{dotted} has no description for its --help")
    flags = FLAGS.get(dotted, ("--" + dotted.rsplit(".", 1)[-1].replace("_", "-"),))
    kind, parser, metavar = bare_type(field.annotation), None, None
    item = bare_type(get_args(kind)[0]) if get_origin(kind) is list else None
    default = field.get_default(call_default_factory=True)
    if get_origin(kind) is Literal:
        kind, metavar = str, _choices(kind)
    elif item is str:
        kind = list[str]
    elif item is not None:
        kind, parser, metavar = str, _csv, (_choices(item) or f"<{item.__name__}>") + ",..."
        default = ",".join(map(str, default))
    option = typer.Option(*flags, help=field.description, parser=parser, metavar=metavar, show_default=default is not None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Optional[kind], option], default=default)


def _choices(kind: Any) -> str | None:
    return "[" + "|".join(get_args(kind)) + "]" if get_origin(kind) is Literal else None


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_spec_command(
    "train", "Train a diffusion LM: plain diffusion loss or the TokenDrift objective. Under several processes (torchrun), "
    "each takes its share of every batch.\n\n"
    "The progress bar shows the diffusion loss (nats/token: it tracks the model's likelihood under either objective), "
    "under TokenDrift the drift loss (½‖αV‖² of a normalised field: it may rise while training goes well), and tokens/s. "
    "The run writes metrics.jsonl and curves.png (losses, validation NELBO and the before/after quality against step); "
    "--set logging.trackers=tensorboard,wandb also logs through Accelerate to TensorBoard or W&B.",
    ["model.backbone", "model.init", "objective", "nfe", "optim.max_steps", "optim.batch_size", "optim.lr"],
    resumable=True,
)
_spec_command(
    "sample", "Generate samples at a fixed number of network calls (NFE). Under several processes (torchrun), runs on the main process only.",
    ["model", "sampling.nfe", "sampling.num_samples", "sampling.batch_size", "sampling.seq_len", "sampling.temperature", "sampling.top_p"],
)
_spec_command(
    "eval", "Judge samples: Gen.-PPL, entropy, validation perplexity, n-gram JSD, NFE sweeps.\n\n"
    "Each number comes with its standard error over samples (docs/metrics.md); the samples judged are saved under "
    "samples/ in the run folder, and train runs given with --model that differ only in their seed are also pooled "
    "(mean ± SD over seeds). On the synthetic language each Gen.-PPL stands beside the exact denoiser's for the same "
    "process and NFE (exact:mdlm, exact:duo), with model error and factorization error. Under several processes "
    "(torchrun), runs on the main process only.",
    ["samples", "models", "evaluation.nfe", "evaluation.genppl_model", "evaluation.metrics", "sampling.num_samples"],
)
_spec_command(
    "probe", "One forward pass over a prompt plus N masks: top-k per masked position, aggregated. Under several processes (torchrun), runs on the main process only.",
    ["probe.prompts", "probe.prompt", "probe.model", "probe.num_masks", "probe.top_k", "probe.num_prompts",
     "probe.chat_template", "probe.batch_size", "probe.dtype", "probe.from_lima"],
)
_spec_command(
    "marginal-trap", 'How far parallel decoding from per-token marginals is from the joint ("I likes tennis"). Under several processes (torchrun), runs on the main process only.',
    ["trap.mode", "trap.joint", "trap.model"],
)


@app.command("spec")
def spec_listing(
    command: Annotated[str, typer.Argument(metavar="COMMAND", help="train, sample, eval, probe or marginal-trap.")],
    preset: Preset = None,
    spec: SpecFile = None,
    set_: Overrides = None,
    format: Annotated[str, typer.Option("--format", help="yaml (a spec file --spec reads back, the help as comments), table, or json.")] = "yaml",
) -> None:
    """Print a command's resolved spec: every field with its type, default and help."""
    from tokendrift_cli.spec import load_spec, spec_to_dict
    from tokendrift_cli.spec.listing import FORMATS, field_rows, flow, spec_yaml

    ui = UI(json_mode=format == "json")
    with _bad_input_exits(ui):
        if command not in JOB_MODULES:
            raise InputError(f"COMMAND: no command '{command}' has a spec (one of {', '.join(JOB_MODULES)})")
        if format not in FORMATS:
            raise InputError(f"--format: expected one of {', '.join(FORMATS)}, got '{format}'")
        resolved = load_spec(command, preset=preset, spec_file=spec, overrides=set_)
    if format == "json":
        ui.print_json({"command": command, "spec": spec_to_dict(resolved), "fields": field_rows(resolved)})
    elif format == "table":
        rows = [{**row, "value": flow(row["value"]), "default": flow(row["default"])} for row in field_rows(resolved)]
        ui.table(f"tokendrift {command}", rows, ["key", "type", "value", "default", "help"], no_wrap=["key"])
    else:
        given = [f"--preset {preset}"] * bool(preset) + [f"--spec {spec}"] * bool(spec) + [f"--set {item}" for item in set_ or []]
        print(spec_yaml(resolved, ", ".join(["defaults", *given])), end="")


@app.command()
def presets(
    name: Annotated[Optional[str], typer.Argument(help="Show this preset's content.")] = None,
    json: Json = False,
) -> None:
    """List the shipped presets, or show one."""
    from tokendrift_cli.spec import preset_names, read_preset

    ui = UI(json_mode=json)
    with _bad_input_exits(ui):
        if name is None:
            result: Any = {"presets": []}
            for preset_name in preset_names():
                content, description = read_preset(preset_name)
                result["presets"].append({"name": preset_name, "command": content.get("command"), "description": description})
            rows = result["presets"]
            ui.table("presets", rows, ["name", "command", "description"])
        else:
            content, description = read_preset(name, given_as="tokendrift presets")
            result = {"name": name, "description": description, "spec": content}
            import yaml

            ui.console.print(f"[bold]{name}[/]: {description}\n" + yaml.safe_dump(content, sort_keys=False), highlight=False)
    if json:
        ui.print_json(result)


def main() -> None:
    app(prog_name="tokendrift")


if __name__ == "__main__":
    main()
