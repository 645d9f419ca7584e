"""Judging generated samples: Gen.-PPL under the exact oracle or a causal LM, and sample entropy."""

from __future__ import annotations

import torch

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.errors import InputError
from tokendrift_cli.metrics.text_stats import sample_entropy


def judge_name(requested: str, language: SyntheticLanguage | None) -> str:
    """'auto' is the exact oracle on the synthetic language and GPT-2 Large (the papers' judge) otherwise."""
    if requested == "auto":
        return "oracle" if language is not None else "gpt2-large"
    return requested


def judge_ids(
    ids: list[list[int]], texts: list[str], language: SyntheticLanguage | None, requested: str,
    oracle_epsilon: float = 1e-3, batch_size: int = 8, dtype: str = "float32",
) -> dict:
    """{judge, gen_ppl, entropy, and acceptance under the oracle} of one sample set."""
    name = judge_name(requested, language)
    result: dict = {"judge": name}
    if name == "oracle":
        from tokendrift_cli.metrics.oracle import OracleJudge

        if language is None:
            raise InputError("judge: the oracle judges only the built-in synthetic language")
        scored = OracleJudge(language, oracle_epsilon).score_ids(torch.tensor(ids))
        result.update(gen_ppl=scored.gen_ppl, acceptance=scored.acceptance)
    else:
        from tokendrift_cli.metrics.genppl import HFJudge

        result["gen_ppl"] = HFJudge(name, batch_size=batch_size, dtype=dtype).score(texts, max_length=len(ids[0])).gen_ppl
    result["entropy"] = sample_entropy(ids)
    return result
