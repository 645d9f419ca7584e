"""Judging generated samples: Gen.-PPL under the exact oracle (the synthetic language) or a causal LM."""

from __future__ import annotations

import torch

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.errors import InputError


def judge_name(requested: str, language: SyntheticLanguage | None) -> str:
    """'auto' is the exact oracle on the synthetic language and GPT-2 Large (the papers' judge) otherwise."""
    if requested == "auto":
        return "oracle" if language is not None else "gpt2-large"
    return requested


def gen_ppl(
    texts: list[str], ids: list[list[int]] | None, language: SyntheticLanguage | None, requested: str, *, field: str,
    oracle_epsilon: float = 1e-3, batch_size: int = 8, dtype: str = "float32", max_length: int | None = None,
) -> dict:
    """{judge, gen_ppl, ...} of one sample set. The oracle scores the sampler's ids when known (else
    the texts) and adds acceptance; a causal LM scores the texts by DUO's protocol, cut to `max_length`.
    `field` names the spec field that chose the judge, for the error."""
    name = judge_name(requested, language)
    if name == "oracle":
        from tokendrift_cli.metrics.oracle import OracleJudge

        if language is None:
            raise InputError(f"{field}: the oracle judges only the built-in synthetic language")
        judge = OracleJudge(language, oracle_epsilon)
        scored = judge.score_ids(torch.tensor(ids)) if ids else judge.score_texts(texts)
        return {"judge": name, **scored.as_row()}
    from tokendrift_cli.metrics.genppl import HFJudge

    judged = HFJudge(name, batch_size=batch_size, dtype=dtype).score(texts, max_length=max_length)
    return {"judge": name, "gen_ppl": judged.gen_ppl, "gen_ppl_se": judged.gen_ppl_se, "judged_tokens": judged.num_tokens, "protocol": "duo: retokenize, eos-pad, chunk, first-eos"}
