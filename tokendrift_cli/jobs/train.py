"""`tokendrift train`: the diffusion loss, optionally plus TokenDrift, on Hugging Face Accelerate.

Reproducibility is by construction: the data order is a seeded stream of permutations and every
micro-batch draws its noise from a generator seeded by (seed, step, micro-batch, rank). So the
matched baseline (`objective: diffusion`) sees exactly the batches and noise of the TokenDrift
run, and a resumed run continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed

from tokendrift_cli.data import load_data
from tokendrift_cli.data.synthetic import default_cache_dir
from tokendrift_cli.diffusion import make_process
from tokendrift_cli.drift import TokenDrift, build_encoder, diffusion_objective
from tokendrift_cli.errors import InputError, first_line
from tokendrift_cli.models.compiling import adamw, compile_modules
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.models.ema import EMA
from tokendrift_cli.models.loading import build_denoiser, load_denoiser
from tokendrift_cli.runs import MODEL, RESULTS, SPEC, Run, RunDir, atomic_write_text, process_count, to_json, writing
from tokendrift_cli.spec import LoggingSpec, ModelFacts, QualitySpec, TrainSpec, check_against_model, flatten, load_spec, spec_to_dict
from tokendrift_cli.spec.model import BUILTIN
from tokendrift_cli.spec.optim import OptimSpec
from tokendrift_cli.standing import with_short_headers
from tokendrift_cli.ui import UI

# The builtin starting checkpoint's pretraining (diffusion loss, batch 64): about two minutes of
# a 2-core CPU for the tiny model, and the budget at which its NFE-4 samples are poor enough to improve.
BUILTIN_STEPS, BUILTIN_LR = 1500, 1e-3
# Without --backbone the builtin checkpoint is DUO: on the synthetic language the paper's objective
# improves DUO and not MDLM (docs/results.md), and the embedded default should show the method.
BUILTIN_BACKBONE = "duo"


def run(spec: TrainSpec, run: RunDir, ui: UI, *, published: Path | None = None, nested: bool = False) -> dict:
    """Train; `published` is the folder the run's files will be in once it is done, where that is
    not `run.path` (the builtin build's): the paths the result names are there. `nested`: a train
    run inside another (the builtin build), which leaves the processes' group to the run it serves."""
    if spec.optim.mixed_precision == "fp16" and not torch.cuda.is_available():  # Accelerate would run float32 and say nothing
        raise InputError("optim.mixed_precision: fp16 needs a CUDA GPU and there is none; use bf16 or no")
    requested = spec
    if spec.model.init == BUILTIN:  # first: its build is a train run with its own Accelerator
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"init": builtin_checkpoint(spec, ui)})})
    accelerator = Accelerator(
        cpu=_cpu_processes(),
        gradient_accumulation_steps=spec.optim.grad_accum,
        # Accelerate would step a prepared scheduler once per process at each optimiser step, so the
        # schedule would run N times too fast under N processes; the loop steps it once itself.
        step_scheduler_with_optimizer=False,
        mixed_precision=spec.optim.mixed_precision,
        log_with=spec.logging.trackers or None,
        project_dir=str(run.path),
    )
    set_seed(spec.seed)
    micro_batch = _micro_batch_size(spec, accelerator.num_processes)

    data, tokenizer = load_data(spec.data, seed=spec.seed)
    train_set = data["train"].with_format("torch")
    valid_ids = data["validation"].with_format("torch")[: spec.logging.valid_sequences]["input_ids"]
    model = build_denoiser(spec.model, tokenizer, seq_len=spec.data.seq_len)
    check_against_model(spec, ModelFacts(model.config.max_position_embeddings, model.config.vocab_size))
    if requested.model.backbone is None:  # spec.yaml records what runs: the backbone read off the checkpoint
        run.write_yaml(SPEC, spec_to_dict(requested.model_copy(update={"model": requested.model.model_copy(update={"backbone": model.config.backbone})})))
    process = make_process(
        model.config.backbone, spec.diffusion, model.config.vocab_size, model.config.mask_token_id, model.config.time_conditioning
    )

    objective = _objective(spec, model, accelerator)  # before prepare: the frozen encoder copies the bare model

    optimizer = adamw(
        [p for p in model.parameters() if p.requires_grad], accelerator.device,
        lr=spec.optim.lr, betas=spec.optim.betas, weight_decay=spec.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(spec))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    _compile(spec, model, objective, accelerator, ui)  # after prepare: in place, inside Accelerate's wrappers
    ema = EMA(accelerator.unwrap_model(model), spec.optim.ema) if spec.optim.ema > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if isinstance(objective, TokenDrift):  # its reference queues are training state too
        for queue in objective.queues():
            accelerator.register_for_checkpointing(queue)
    if spec.logging.trackers:
        accelerator.init_trackers("tokendrift", config=spec.model_dump(mode="json"))

    start_step = _resume(run, accelerator) if run.resume else 0
    stream = _IndexStream(len(train_set), spec.seed)
    tokens_per_step = spec.optim.batch_size * spec.data.seq_len
    last: dict = {}
    window: list[dict] = []
    started = time.perf_counter()

    with ui.progress() as progress:
        task = progress.add_task("train", total=spec.optim.max_steps, completed=start_step, info="")
        for step in range(start_step + 1, spec.optim.max_steps + 1):
            step_started = time.perf_counter()
            model.train()
            for micro in range(spec.optim.grad_accum):
                offset = ((step - 1) * spec.optim.grad_accum + micro) * micro_batch * accelerator.num_processes
                indices = stream.take(offset + accelerator.process_index * micro_batch, micro_batch)
                x0 = train_set[indices]["input_ids"].to(accelerator.device)
                # Noise keyed by the micro-batch's slot in the global step, so a global batch gets the
                # same noise however processes and accumulation split it (the trailing 0 keeps the
                # keys single-process runs always had).
                slot = micro * accelerator.num_processes + accelerator.process_index
                generator = _generator(accelerator.device, spec.seed, step, slot, 0)
                with accelerator.accumulate(model):
                    stats = objective(model, process, x0, generator, accelerator.backward)
                    if accelerator.sync_gradients and spec.optim.grad_clip > 0:
                        stats["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), spec.optim.grad_clip))
                    optimizer.step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                window.append(stats)
            if ema is not None:
                ema.update(accelerator.unwrap_model(model))

            row = {"step": step, "lr": scheduler.get_last_lr()[0], **_mean(window, accelerator)}
            row["tokens_per_s"] = tokens_per_step / (time.perf_counter() - step_started)
            window = []
            if spec.logging.eval_every and step % spec.logging.eval_every == 0 or step == spec.optim.max_steps:
                row.update(_validate(model, ema, process, valid_ids, spec, accelerator))
            if step % spec.logging.log_every == 0 or step == spec.optim.max_steps or "val_nelbo" in row:
                run.log_metrics(row)
                if spec.logging.trackers:
                    accelerator.log(row, step=step)
            last.update(row)
            progress.update(task, advance=1, info=_progress_info(row))
            if spec.logging.save_every and step % spec.logging.save_every == 0 or step == spec.optim.max_steps:
                _save_checkpoint(run, accelerator, model, ema, tokenizer, step, spec.logging.keep_checkpoints)

    model_dir = _save_final(run, accelerator, model, ema, tokenizer)
    quality = _quality(spec, model_dir, tokenizer, process, valid_ids, accelerator, ui) if spec.quality.num_samples else None
    curves = _plot_curves(run, quality)
    if not nested:
        accelerator.end_training()  # ends trackers and the processes' group
    seconds = time.perf_counter() - started
    steps_done = spec.optim.max_steps - start_step
    home, checkpoint = published or run.path, run.latest_checkpoint()
    result = {
        "backbone": accelerator.unwrap_model(model).config.backbone,
        "objective": spec.objective,
        "steps": spec.optim.max_steps,
        "steps_this_run": steps_done,
        "processes": accelerator.num_processes,
        "resumed_from": start_step or None,
        "seconds": seconds,
        "tokens_per_s": steps_done * tokens_per_step / seconds if seconds > 0 else None,
        **{key: last[key] for key in ("loss", "diffusion_loss", "drift_loss", "val_nelbo", "val_ppl") if key in last},
        "init": spec.model.init,
        "model_path": str(home / model_dir.relative_to(run.path)),
        "checkpoint": str(home / checkpoint.relative_to(run.path)) if checkpoint else None,
        "curves": str(home / curves.relative_to(run.path)),
    }
    ui.table(f"tokendrift train · {result['backbone']} · {spec.objective}", [
        {"": key, "value": value} for key, value in result.items() if value is not None
    ])
    if quality:
        result["quality"] = quality
        labels = {"before": "before", "after": "after", "exact": f"exact {result['backbone']} denoiser", "floor": "the language (floor)"}
        shown = [{"": label, **with_short_headers(quality[name])} for name, label in labels.items() if quality.get(name)]
        columns = ["", "gen_ppl", "acceptance", "entropy", "val_ppl", "model err", "fact. err"]
        ui.table(f"quality at NFE {quality['nfe']} · judge {quality['judge']} · {spec.quality.num_samples} samples · ± SE",
                 shown, [c for c in columns if any(c in row for row in shown)])
        if "exact" in quality:
            ui.console.print("model err = ln(gen_ppl / exact denoiser's), fact. err = ln(exact / floor), nats per token; "
                             "the exact denoiser is the best a likelihood-trained model reaches with this sampler and NFE")
    return result


# ---------------------------------------------------------------------------- objective


def _objective(spec: TrainSpec, model, accelerator: Accelerator):
    """The per-micro-batch objective: it computes its loss and calls `backward` on it."""
    if spec.objective == "diffusion":
        return diffusion_objective
    encoder = build_encoder(spec.drift, model).to(accelerator.device)
    gather = accelerator.gather if accelerator.num_processes > 1 else None
    return TokenDrift(spec.drift, encoder, gather, accelerator.process_index, accelerator.device, nfe=spec.nfe)


def _compile(spec: TrainSpec, model, objective, accelerator: Accelerator, ui: UI) -> None:
    """torch.compile the denoiser and TokenDrift's frozen encoder, as optim.compile says."""
    networks = [accelerator.unwrap_model(model)] + ([objective.encoder] if isinstance(objective, TokenDrift) else [])
    compile_modules(networks, spec.optim.compile, accelerator.device, "optim.compile", ui.note)


@torch.no_grad()
def _validate(model, ema, process, valid_ids, spec: TrainSpec, accelerator: Accelerator) -> dict:
    """Validation NELBO (nats/token) and its perplexity bound, with fixed noise so steps compare."""
    raw = accelerator.unwrap_model(model)
    raw.eval()
    with ema.swapped_in(raw) if ema is not None else nullcontext():
        nelbo = _val_nelbo(raw, process, valid_ids, spec, accelerator.device)
    return {"val_nelbo": nelbo, "val_ppl": math.exp(nelbo)}


@torch.no_grad()
def _val_nelbo(raw, process, valid_ids, spec: TrainSpec, device: torch.device) -> float:
    """Mean NELBO per token over the validation sequences, under the run's fixed validation noise."""
    generator = _generator(device, spec.seed, -1, 0, 0)
    total, count = 0.0, 0
    for batch in valid_ids.split(spec.optim.batch_size):
        total += float(process.val_nelbo(as_denoiser(raw), batch.to(device), generator)) * batch.numel()
        count += batch.numel()
    return total / count


# ---------------------------------------------------------------------------- what the run targets


def _quality(spec: TrainSpec, model_dir: Path, tokenizer, process, valid_ids, accelerator: Accelerator, ui: UI) -> dict | None:
    """Samples at the run's NFE from the starting checkpoint and from the trained model (the saved
    weights: EMA when on), drawn with the same seed and judged alike: the oracle on the
    synthetic language, else quality.judge; each with its validation perplexity bound, scored
    as the run's own validation is (so `after` equals the run's last val_ppl). On the main
    process only (None on the others)."""
    from tokendrift_cli.data.synthetic import SyntheticLanguage
    from tokendrift_cli.generation import generate
    from tokendrift_cli.metrics.judging import gen_ppl
    from tokendrift_cli.metrics.text_stats import sample_entropy_with_se
    from tokendrift_cli.spec.sampling import SamplerSpec

    quality: dict = {"nfe": spec.nfe}
    if accelerator.is_main_process:
        language = SyntheticLanguage(p_eos=spec.data.p_eos) if spec.data.source == "synthetic" else None
        sampler = SamplerSpec(num_samples=spec.quality.num_samples, batch_size=spec.quality.batch_size, seq_len=spec.data.seq_len)
        models = {
            "before": (lambda: build_denoiser(spec.model, tokenizer, spec.data.seq_len)) if spec.model.init else None,
            "after": lambda: load_denoiser(str(model_dir)),
        }
        for name, load in models.items():
            if load is None:  # trained from scratch: nothing to compare with
                quality[name] = None
                continue
            model = load().to(accelerator.device).eval()
            ids = generate(model, process, sampler, spec.nfe, spec.seed, ui).ids.tolist()
            judged = gen_ppl(tokenizer.batch_decode(ids), ids, language, spec.quality.judge, field="quality.judge", max_length=len(ids[0]))
            quality["judge"] = judged["judge"]
            quality[name] = {
                **{key: judged.get(key) for key in ("gen_ppl", "gen_ppl_se", "acceptance", "acceptance_se")}, **sample_entropy_with_se(ids),
                "val_ppl": math.exp(_val_nelbo(model, process, valid_ids, spec, accelerator.device)),
            }
        if language is not None and quality["judge"] == "oracle":  # where the numbers stand: the exact denoiser and the floor
            from tokendrift_cli.metrics.oracle import OracleJudge
            from tokendrift_cli.standing import Standing

            standing = Standing(language, OracleJudge(language), sampler, spec.seed, ui)
            backbone, seq_len = model.config.backbone, spec.data.seq_len
            for name in ("before", "after"):
                if quality[name]:
                    quality[name].update(standing.place(quality[name]["gen_ppl"], backbone, spec.nfe, seq_len))
            exact = standing.exact(backbone, spec.nfe, seq_len)
            quality["floor"] = {"gen_ppl": standing.floor(seq_len)}
            quality["exact"] = {**exact, "factorization_error": math.log(exact["gen_ppl"] / quality["floor"]["gen_ppl"])}
    accelerator.wait_for_everyone()
    return quality if accelerator.is_main_process else None


def _plot_curves(run: RunDir, quality: dict | None) -> Path:
    """curves.png: the logged losses, validation NELBO and (with a quality report) Gen.-PPL against
    step, from metrics.jsonl, so a resumed run's picture holds its whole history."""
    from tokendrift_cli.plots import subplots

    rows = run.read_metrics()
    panels = ["diffusion"] + (["drift"] if any("drift_loss" in r for r in rows) else []) + (["quality"] if quality else [])
    fig, axes = subplots(ncols=len(panels), width=4.5)
    for ax, panel in zip(axes[0], panels):
        if panel == "diffusion":
            ax.plot([r["step"] for r in rows], [r["diffusion_loss"] for r in rows], label="train (diffusion loss)")
            valid = [r for r in rows if "val_nelbo" in r]
            ax.plot([r["step"] for r in valid], [r["val_nelbo"] for r in valid], "o-", markersize=3, label="validation NELBO")
            ax.set(ylabel="nats / token", title="diffusion loss")
        elif panel == "drift":
            drift = [r for r in rows if "drift_loss" in r]
            ax.plot([r["step"] for r in drift], [r["drift_loss"] for r in drift], color="tab:green", label="drift loss ½‖αV‖²")
            ax.set(title="drift loss (normalised field)")
        else:
            assert quality is not None
            last = rows[-1]["step"] if rows else 0
            points = [(step, quality[name]) for step, name in ((0, "before"), (last, "after")) if quality.get(name)]
            ax.errorbar([step for step, _ in points], [q["gen_ppl"] for _, q in points], yerr=[q.get("gen_ppl_se") or 0.0 for _, q in points],
                        marker="o", capsize=4, label=f"Gen.-PPL ({quality['judge']}) ± SE")
            ax.set(yscale="log", title=f"quality at NFE {quality['nfe']}")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    return run.save_figure("curves.png", fig)


def builtin_checkpoint(spec: TrainSpec, ui: UI) -> str:
    """The toolkit's own starting checkpoint for `spec`'s backbone, size and synthetic data:
    pretrained with the diffusion loss on first use, then cached. Every process builds it
    together (it is a train run), and the folder appears under its final name only when done."""
    backbone = spec.model.backbone or BUILTIN_BACKBONE
    recipe = TrainSpec(  # the run's nfe is not the build's: a diffusion run without a quality report never samples
        objective="diffusion", seed=0, data=spec.data,
        model=spec.model.model_copy(update={"init": None, "backbone": backbone}),
        optim=OptimSpec(max_steps=BUILTIN_STEPS, lr=BUILTIN_LR, warmup_steps=50, batch_size=64, compile=spec.optim.compile),
        logging=LoggingSpec(eval_every=0, save_every=500, log_every=100), quality=QualitySpec(num_samples=0),
    )
    recipe = recipe.model_copy(update={"threads": spec.threads})  # how it is computed, not what: outside the key (as compile)
    recipe_json = json.dumps(recipe.model_dump(mode="json", exclude={"data": {"cache_dir"}, "threads": True, "optim": {"compile"}}), sort_keys=True)
    key = hashlib.sha256(recipe_json.encode()).hexdigest()[:12]
    folder = Path(spec.data.cache_dir or default_cache_dir()) / "pretrained" / f"{backbone}-{spec.model.size}-{key}"
    if not Run(folder).file(RESULTS).is_file():  # the folder gets its name only when the build is done
        ui.note(f"pretraining the builtin {backbone} checkpoint once ({BUILTIN_STEPS} steps) into {folder}")
        building = folder.with_name(folder.name + ".building")
        interrupted = Run(building).latest_checkpoint() is not None  # it continues from its last checkpoint
        PartialState(cpu=_cpu_processes()).wait_for_everyone()  # every process has looked before the main one writes there
        try:
            pretrain = RunDir(building, resume=interrupted)  # its lock keeps two first uses from building at once
        except InputError as err:
            raise InputError(f"model.init: builtin: cannot build {building} ({err})") from None
        with pretrain:
            pretrain.write_yaml(SPEC, recipe.model_dump(mode="json"))
            pretrain.write_json(RESULTS, {"run_dir": str(folder), **run(recipe, pretrain, ui, published=folder, nested=True)})
            if pretrain.is_main:  # renamed while still locked: no other build can start in between
                os.replace(building, folder)
        PartialState(cpu=_cpu_processes()).wait_for_everyone()
        # The build's Accelerator set Accelerate's process-wide state (mixed precision, gradient
        # accumulation); the run's own, made next, must not inherit it. Accelerate has no public reset.
        AcceleratorState._reset_state()
        GradientState._reset_state()
    return str(folder)


# ---------------------------------------------------------------------------- data order and noise


class _IndexStream:
    """Training sequence k is permutation_{k // n}[k % n]: epochs of seeded shuffles, addressable by position."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._epochs: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            self._epochs = {epoch: torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))}
        return self._epochs[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [int(self._epoch(k // self.size)[k % self.size]) for k in range(start, start + count)]


def _generator(device: torch.device, *key: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([abs(k) + (k < 0) * 2**31 for k in key]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def _cpu_processes() -> bool:
    """Several processes on a machine without CUDA (torchrun, accelerate launch): gloo on CPU. Told
    to every Accelerate state alike: the first one made decides for the process."""
    return not torch.cuda.is_available() and process_count() > 1


def _micro_batch_size(spec: TrainSpec, num_processes: int) -> int:
    parts = spec.optim.grad_accum * num_processes
    if spec.optim.batch_size % parts:
        raise InputError(
            f"optim.batch_size: {spec.optim.batch_size} sequences do not split over "
            f"{num_processes} process(es) × {spec.optim.grad_accum} accumulation steps"
        )
    return spec.optim.batch_size // parts


def _lr_lambda(spec: TrainSpec):
    warmup, total = spec.optim.warmup_steps, spec.optim.max_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if spec.optim.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


# ---------------------------------------------------------------------------- checkpoints


def _save_checkpoint(run: RunDir, accelerator: Accelerator, model, ema, tokenizer, step: int, keep: int) -> None:
    """checkpoint-<step>: every process's Accelerate state, then the model and step from the main one."""
    final = run.checkpoint_path(step)
    tmp = run.staging(final)
    accelerator.wait_for_everyone()
    with writing(tmp):
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's state is written before the main one publishes the folder
    if accelerator.is_main_process:
        with writing(tmp):
            _save_model(accelerator, model, ema, tokenizer, tmp / MODEL)
            atomic_write_text(tmp / TRAINER_STATE, to_json({"step": step, "processes": accelerator.num_processes}))
    run.publish(tmp, final)
    run.prune_checkpoints(keep)
    accelerator.wait_for_everyone()


def _save_final(run: RunDir, accelerator: Accelerator, model, ema, tokenizer) -> Path:
    final = run.file(MODEL)
    if accelerator.is_main_process:
        tmp = run.staging(final)
        with writing(tmp):
            _save_model(accelerator, model, ema, tokenizer, tmp)
        run.publish(tmp, final)
    accelerator.wait_for_everyone()
    return final


def _save_model(accelerator: Accelerator, model, ema, tokenizer, folder: Path) -> None:
    """The weights users sample from: the EMA weights when EMA is on, as a save_pretrained folder."""
    raw = accelerator.unwrap_model(model)
    with ema.swapped_in(raw) if ema is not None else nullcontext():
        raw.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


# What a resumed run may change: how far it goes, how it logs and saves, its CPU threads and
# whether it compiles (a machine's choices, which move only the last digits). Anything else
# would make it a different run than the one its spec.yaml, metrics and checkpoints record.
RESUMABLE_CHANGES = ("optim.max_steps", "logging.", "threads", "optim.compile")
TRAINER_STATE = "trainer_state.json"


def check_resume(spec: TrainSpec, run: RunDir) -> None:
    """Refuse a --resume that would not continue the run in `run` (called before its spec.yaml is
    rewritten). A run stopped before its first checkpoint starts over from step 0."""
    recorded = flatten(spec_to_dict(load_spec("train", spec_file=run.file(SPEC))))
    for key, value in flatten(spec_to_dict(spec)).items():
        if value != recorded.get(key) and not key.startswith(RESUMABLE_CHANGES):
            raise InputError(
                f"{key}: {value!r} differs from the run's {recorded.get(key)!r} ({run.file(SPEC)}); "
                "a resumed run may change only optim.max_steps, logging.*, threads and optim.compile"
            )
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        return
    # Each process's share of a step's batch and noise, and its RNG state, follow the process count.
    try:
        saved = json.loads((checkpoint / TRAINER_STATE).read_text()).get("processes")
    except (OSError, ValueError, AttributeError):
        raise InputError(f"--resume {run.path}: {checkpoint / TRAINER_STATE}: cannot be read") from None
    if saved is not None and saved != process_count():  # None: a checkpoint from before the count was recorded
        raise InputError(
            f"--resume {run.path}: {checkpoint.name} was saved by {saved} process(es), not {process_count()}; "
            "resume with as many, or the run continues on other batches"
        )
    step = run.step_of(checkpoint)
    if spec.optim.max_steps < step:
        raise InputError(f"optim.max_steps: {spec.optim.max_steps} is below the checkpoint's step {step}; a resumed run cannot go back")
    if spec.optim.max_steps == step and run.file("results.json").exists():
        raise InputError(f"--resume {run.path}: the run finished at step {step}; raise --max-steps to continue it")


def _resume(run: RunDir, accelerator: Accelerator) -> int:
    """The step the run continues from: its latest checkpoint's, loaded; 0 if it stopped before one."""
    from safetensors import SafetensorError

    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        run.truncate_metrics(last_step=0)
        return 0
    try:
        accelerator.load_state(str(checkpoint))
    except (OSError, RuntimeError, KeyError, ValueError, SafetensorError) as err:  # truncated, or saved by another model
        raise InputError(f"--resume {run.path}: {checkpoint.name} does not load ({first_line(err)})") from None
    step = run.step_of(checkpoint)
    run.truncate_metrics(last_step=step)
    return step


# ---------------------------------------------------------------------------- small helpers


def _mean(window: list[dict], accelerator: Accelerator) -> dict:
    """Mean of each logged statistic over the step's micro-batches (where logged) and processes."""
    keys = sorted(set().union(*window))
    values = torch.stack([torch.stack([torch.as_tensor(s.get(k, float("nan")), dtype=torch.float32) for k in keys]) for s in window])
    values = accelerator.reduce(values.nanmean(0).to(accelerator.device), reduction="mean")
    return {k: float(v) for k, v in zip(keys, values.cpu())}


def _progress_info(row: dict) -> str:
    """The progress bar's columns (README, "What train shows"): the diffusion loss, which tracks
    the model's likelihood under either objective, then TokenDrift's drift loss (½‖αV‖² of a
    normalised field: its size says how far samples are from data, and it may rise while
    training goes well), then throughput."""
    parts = [f"diffusion loss {row['diffusion_loss']:.3f}"]
    if "drift_loss" in row:
        parts.append(f"drift loss {row['drift_loss']:.3f}")
    parts.append(f"{row['tokens_per_s']:.0f} tok/s")
    return " · ".join(parts)
