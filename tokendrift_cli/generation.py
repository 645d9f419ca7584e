"""Sampling a saved denoiser: load it with the diffusion process it was trained with, then draw
fixed-NFE batches with that process's sampler. Used by sample, eval and train's quality report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from tokendrift_cli.diffusion import make_process
from tokendrift_cli.models.compiling import compile_modules
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.models.exact import is_exact, load_exact
from tokendrift_cli.models.loading import default_device, load_denoiser, load_tokenizer_for
from tokendrift_cli.runs import train_run
from tokendrift_cli.spec.diffusion import DiffusionSpec
from tokendrift_cli.spec.sampling import SamplerSpec
from tokendrift_cli.ui import UI


@dataclass
class Generation:
    ids: torch.Tensor  # [num_samples, seq_len]
    nfe_used: torch.Tensor  # [num_samples] network calls each sequence took
    seconds: float


def load_for_sampling(reference: str, weights: str = "ema", seq_len: int | None = None, compiled: bool = False,
                      note: Callable[[str], None] = print):
    """The denoiser, its tokenizer and its diffusion process (with the training run's settings if
    known). `exact:mdlm` / `exact:duo` is the synthetic language's exact denoiser, at `seq_len`.
    `compiled`: a trained denoiser is compiled (`note` says why not where it cannot be)."""
    if is_exact(reference):
        model, tokenizer = load_exact(reference, seq_len)
        diffusion = DiffusionSpec()
    else:
        model = load_denoiser(reference, weights=weights).to(default_device()).eval()  # type: ignore[arg-type]  # transformers wraps Module.to with functools.wraps, whose hints take self first
        compile_modules([model], compiled, model.device, "sampling.compile", note)
        tokenizer = load_tokenizer_for(reference)
        run = train_run(reference)  # a train run samples with the process it was trained with
        diffusion = run.recorded("diffusion", DiffusionSpec) if run else DiffusionSpec()
    return model, tokenizer, process_for(model, diffusion)


def process_for(model, diffusion: DiffusionSpec):
    """The diffusion process a denoiser samples with: its backbone's, with its vocabulary and time conditioning."""
    config = model.config
    return make_process(config.backbone, diffusion, config.vocab_size, config.mask_token_id, config.time_conditioning)


@torch.no_grad()
def generate(model, process, sampling: SamplerSpec, nfe: int, seed: int, ui: UI) -> Generation:
    """`sampling.num_samples` sequences of `nfe` calls each, in batches, one seeded generator for the whole run."""
    device = model.device
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


def sample_rows(generation: Generation, texts: list[str]) -> list[dict]:
    """samples.jsonl's lines: each sample's index, the network calls it took, its ids and its text."""
    return [
        {"id": i, "nfe": int(nfe), "ids": ids, "text": text}
        for i, (ids, nfe, text) in enumerate(zip(generation.ids.tolist(), generation.nfe_used.tolist(), texts))
    ]
