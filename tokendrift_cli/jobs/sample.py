"""`tokendrift sample`: fixed-NFE generation with the backbone's own sampler."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.markup import escape

from tokendrift_cli.diffusion import make_process
from tokendrift_cli.errors import InputError
from tokendrift_cli.metrics.text_stats import sample_entropy
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.models.loading import load_denoiser, load_tokenizer_for
from tokendrift_cli.runs import RunDir
from tokendrift_cli.spec import ModelFacts, SampleSpec, check_against_model, recorded_section
from tokendrift_cli.spec.diffusion import DiffusionSpec
from tokendrift_cli.spec.sampling import SamplerSpec
from tokendrift_cli.ui import UI


@dataclass
class Generation:
    ids: torch.Tensor  # [num_samples, seq_len]
    nfe_used: torch.Tensor  # [num_samples] network calls each sequence took
    seconds: float


def run(spec: SampleSpec, run: RunDir, ui: UI) -> dict:
    reference = spec.model or latest_train_run()
    model, tokenizer, process = load_for_sampling(reference, spec.weights)
    check_against_model(spec, ModelFacts(model.config.max_position_embeddings, model.config.vocab_size))
    generation = generate(model, process, spec.sampling, spec.sampling.nfe, spec.seed, ui)
    texts = tokenizer.batch_decode(generation.ids.tolist())
    rows = [
        {"id": i, "nfe": int(nfe), "ids": ids, "text": text}
        for i, (ids, nfe, text) in enumerate(zip(generation.ids.tolist(), generation.nfe_used.tolist(), texts))
    ]
    samples_path = run.write_jsonl("samples.jsonl", rows)
    num_tokens = generation.ids.numel()
    result = {
        "model": reference,
        "backbone": model.config.backbone,
        "nfe": spec.sampling.nfe,
        "nfe_used_mean": float(generation.nfe_used.float().mean()),
        "num_samples": len(rows),
        "seq_len": generation.ids.shape[1],
        "samples_path": str(samples_path),
        "samples_per_s": len(rows) / generation.seconds,
        "tokens_per_s": num_tokens / generation.seconds,
        "entropy": sample_entropy(generation.ids.tolist()),
    }
    ui.table(f"tokendrift sample · {model.config.backbone} · NFE {spec.sampling.nfe}", [
        {k: result[k] for k in ("num_samples", "nfe", "nfe_used_mean", "samples_per_s", "tokens_per_s", "entropy")}
    ])
    for text in texts[:3]:
        ui.console.print(f"  [dim]›[/] {escape(text)}", highlight=False)
    return result


def load_for_sampling(reference: str, weights: str = "ema", device: torch.device | None = None):
    """The denoiser, its tokenizer and its diffusion process (with the training run's settings if known)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_denoiser(reference, weights=weights).to(device).eval()
    tokenizer = load_tokenizer_for(reference)
    diffusion = DiffusionSpec()
    spec_path = Path(reference) / "spec.yaml"
    if spec_path.is_file():  # a train run dir: sample with the process it was trained with
        diffusion = recorded_section(spec_path, "diffusion", DiffusionSpec)
    process = make_process(
        model.config.backbone, diffusion, model.config.vocab_size, model.config.mask_token_id, model.config.time_conditioning
    )
    return model, tokenizer, process


@torch.no_grad()
def generate(model, process, sampling: SamplerSpec, nfe: int, seed: int, ui: UI) -> Generation:
    """`sampling.num_samples` sequences of `nfe` calls each, in batches, one seeded generator for the whole run."""
    device = next(model.parameters()).device
    seq_len = sampling.seq_len or model.config.max_position_embeddings
    generator = torch.Generator(device=device).manual_seed(seed)
    all_ids, all_nfe = [], []
    started = time.perf_counter()
    with ui.progress() as progress:
        task = progress.add_task(f"sample NFE {nfe}", total=sampling.num_samples, info="")
        for start in range(0, sampling.num_samples, sampling.batch_size):
            batch = min(sampling.batch_size, sampling.num_samples - start)
            ids, nfe_used = process.sample(
                as_denoiser(model), batch, seq_len, nfe, generator,
                temperature=sampling.temperature, top_p=sampling.top_p, cache=sampling.cache,
            )
            all_ids.append(ids.cpu())
            all_nfe.append(torch.as_tensor(nfe_used).expand(batch).cpu())
            progress.update(task, advance=batch)
    return Generation(torch.cat(all_ids), torch.cat(all_nfe), time.perf_counter() - started)


def latest_train_run(root: str | Path = "runs") -> str:
    """The newest train run that finished with a model, for commands given no --model."""
    finished = sorted(Path(root).glob("train-*/model/config.json"), key=lambda p: p.stat().st_mtime)
    if not finished:
        raise InputError(f"model: not given and no finished train run under {root}/; run `tokendrift train` first or pass --model")
    return str(finished[-1].parent.parent)
