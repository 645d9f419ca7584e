"""Gen.-PPL as a Hugging Face `evaluate` metric, shipped with tokendrift and loadable offline:

    import evaluate, tokendrift_cli.metrics.genppl_metric as m
    genppl = evaluate.load(m.__path__[0])
    genppl.compute(predictions=texts, model_id="gpt2-large", max_length=1024)
"""

import datasets
import evaluate

from tokendrift_cli.metrics.genppl import HFJudge

_DESCRIPTION = "Generative perplexity of texts under a causal judge LM (DUO repository protocol)."
_KWARGS = "predictions: list of texts; model_id: judge name or path; max_length: judge tokens kept per text; batch_size; dtype"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class GenPPL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, model_id="gpt2-large", max_length=None, batch_size=8, dtype="float32"):
        result = HFJudge(model_id, batch_size=batch_size, dtype=dtype).score(list(predictions), max_length=max_length)
        return {"gen_ppl": result.gen_ppl, "nll_per_token": result.nll_per_token, "num_tokens": result.num_tokens}
