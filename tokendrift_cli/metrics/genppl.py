"""Generative perplexity under a causal judge LM, following the DUO repository's protocol.

DUO `metrics.py` (`record_generative_perplexity`): retokenize the sample texts with the judge's
tokenizer (truncated to the sampler's length, or to the judge's maximum length for texts from
a file; right-padded with EOS), split every row into
chunks of the judge's context size, score each chunk with the judge, and count as targets all
non-EOS tokens plus the first EOS of the chunk (later EOS are padding). Gen.-PPL is
exp(total NLL / total counted tokens) over all samples. See docs/metrics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokendrift_cli.errors import InputError
from tokendrift_cli.metrics.uncertainty import gen_ppl_se
from tokendrift_cli.models.loading import DTYPES, OFFLINE_HINT, default_device


@dataclass
class GenPPLResult:
    gen_ppl: float
    nll_per_token: float
    num_tokens: int
    gen_ppl_se: float | None  # over samples, by the delta method (metrics/uncertainty.py)


class HFJudge:
    """Any AutoModelForCausalLM (name or local path) as a Gen.-PPL judge."""

    def __init__(self, name_or_path: str, device: torch.device | str | None = None, dtype: str = "float32", batch_size: int = 8):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=DTYPES[dtype])
        except OSError as err:
            raise InputError(f"evaluation.genppl_model: cannot load judge '{name_or_path}' ({type(err).__name__}); {OFFLINE_HINT}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device or default_device())
        self.model.to(self.device).eval()  # type: ignore[arg-type]  # transformers wraps Module.to with functools.wraps, whose hints take self first
        self.name = name_or_path
        self.batch_size = batch_size
        config = self.model.config
        self.context_size = getattr(config, "n_positions", None) or config.max_position_embeddings

    @torch.no_grad()
    def score(self, texts: list[str], max_length: int | None = None) -> GenPPLResult:
        """`max_length`: judge tokens kept per sample; DUO passes the sampler's sequence length, and
        where there is none (texts from a file) the judge's own maximum, as DUO's retokenizer does."""
        encoded = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length or self.context_size,
            return_attention_mask=True, return_token_type_ids=False,
        )
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        eos = self.tokenizer.eos_token_id
        sample_nll, sample_tokens = torch.zeros(ids.shape[0], dtype=torch.float64), torch.zeros(ids.shape[0], dtype=torch.long)
        for start in range(0, ids.shape[0], self.batch_size):
            rows = ids[start : start + self.batch_size].to(self.device)
            rows_mask = mask[start : start + self.batch_size].to(self.device)
            for chunk, chunk_mask in zip(rows.split(self.context_size, -1), rows_mask.split(self.context_size, -1)):
                logits = self.model(chunk, attention_mask=chunk_mask).logits.float()
                nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), chunk[:, 1:], reduction="none")
                first_eos = (chunk == eos).cumsum(-1) == 1
                counted = (first_eos | (chunk != eos))[:, 1:]
                sample_nll[start : start + len(rows)] += (nll * counted).sum(-1).double().cpu()
                sample_tokens[start : start + len(rows)] += counted.sum(-1).cpu()
        total_tokens = int(sample_tokens.sum())
        nll_per_token = float(sample_nll.sum()) / max(total_tokens, 1)
        se = gen_ppl_se(sample_nll.tolist(), sample_tokens.tolist())
        return GenPPLResult(math.exp(nll_per_token), nll_per_token, total_tokens, se)
