"""`tokendrift eval`: judge samples from files or from models swept over NFE.

Each row of the result is one (source, NFE): Gen.-PPL under the judge, mean sample entropy,
grammar acceptance (oracle judge), n-gram JSD to held-out text, each with its standard error over
samples (metrics/uncertainty.py), the model's validation NELBO perplexity bound, and where the
judged samples were written. Train runs that differ only in their seed are also pooled: mean ±
SD over seeds. A PNG plots Gen.-PPL and entropy (± SE) against NFE, one line per model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tokendrift_cli.data.jsonl import read_jsonl
from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.errors import InputError
from tokendrift_cli.generation import generate, load_for_sampling, sample_rows
from tokendrift_cli.metrics.judging import gen_ppl, judge_name
from tokendrift_cli.metrics.oracle import OracleJudge
from tokendrift_cli.metrics.text_stats import ngram_jsd, ngram_jsd_se, sample_entropy_with_se
from tokendrift_cli.metrics.uncertainty import mean_sd
from tokendrift_cli.models.exact import is_exact
from tokendrift_cli.plots import subplots
from tokendrift_cli.runs import SPEC, RunDir, latest_train_run, train_run
from tokendrift_cli.spec import EvalSpec, ModelFacts, check_against_model, flatten, read_spec_file
from tokendrift_cli.spec.data import DataSpec
from tokendrift_cli.standing import SHORT_HEADERS, Standing, with_short_headers
from tokendrift_cli.ui import UI


@dataclass
class Samples:
    texts: list[str]
    ids: list[list[int]] | None  # the sampler's own token ids, when known


def run(spec: EvalSpec, run: RunDir, ui: UI) -> dict:
    evaluation = spec.evaluation
    rows: list[dict] = []
    floor = None
    if spec.samples:
        samples, language = read_samples(spec.samples)
        rows.append({"source": spec.samples, "nfe": None, **_score(samples, language, spec, None)})
    standing: Standing | None = None
    references = spec.models or ([] if spec.samples else [latest_train_run(note=ui.note)])
    for index, reference in enumerate(references):
        model, tokenizer, process = load_for_sampling(reference, spec.weights, spec.sampling.seq_len, spec.sampling.compile, ui.note)
        check_against_model(spec, ModelFacts(model.config.max_position_embeddings, model.config.vocab_size))
        language = _language_for_model(reference, tokenizer)
        # The oracle judges this model's samples: the language it was trained on, or None.
        oracle = language if language is not None and judge_name(evaluation.genppl_model, language) == "oracle" and "genppl" in evaluation.metrics else None
        if oracle is not None and standing is None:
            standing = Standing(oracle, OracleJudge(oracle, evaluation.oracle_epsilon), spec.sampling, spec.seed, ui)
        val_ppl = _val_ppl(reference, model, process, language, spec) if "val_ppl" in evaluation.metrics else None
        for nfe in evaluation.nfe:
            generation = generate(model, process, spec.sampling, nfe, spec.seed, ui)
            ids = generation.ids.tolist()
            samples = Samples(tokenizer.batch_decode(ids), ids)
            # The samples judged, as `sample` writes them: the evidence behind the row's numbers.
            samples_path = run.write_jsonl(f"samples/{index}-{_file_name(reference)}-nfe{nfe}.jsonl", sample_rows(generation, samples.texts))
            row = {"source": reference, "backbone": model.config.backbone, "nfe": nfe, "nfe_used": float(generation.nfe_used.float().mean())}
            row.update(_score(samples, language, spec, generation.ids.shape[1]))
            if oracle is not None and standing is not None:
                if is_exact(reference) and "entropy" in row and model.epsilon == evaluation.oracle_epsilon:
                    standing.remember(model.config.backbone, nfe, generation.ids.shape[1], row)
                row.update(standing.place(row["gen_ppl"], model.config.backbone, nfe, generation.ids.shape[1]))
            if val_ppl is not None:
                row["val_ppl"] = val_ppl
            row["samples_path"] = str(samples_path)
            rows.append(row)
        if oracle is not None:
            floor = OracleJudge(oracle, evaluation.oracle_epsilon).floor(generation.ids.shape[1], spec.sampling.num_samples, spec.seed + 1)

    # Where each row stands (the exact denoiser, the split), under short headers for 80 columns.
    shown = [with_short_headers(r) for r in rows]
    columns = [c for c in ("source", "nfe", "gen_ppl", *SHORT_HEADERS.values(), *METRIC_COLUMNS[1:]) if any(c in r for r in shown)]
    ui.table("tokendrift eval · ± one standard error over samples", shown, columns)
    over_seeds = seed_groups(rows)
    if over_seeds:
        shown = [{"runs": ", ".join(Path(m).name or m for m in g["models"]), **g} for g in over_seeds]
        ui.table("over seeds · mean ± SD", shown, [c for c in ("runs", "seeds", "nfe", *METRIC_COLUMNS) if any(c in r for r in shown)])
    if floor:
        ui.console.print(f"floor (the language's own samples): Gen.-PPL {floor['gen_ppl']:.3f}, exact {floor['exact_gen_ppl']:.3f}")
    if standing is not None:
        ui.console.print("exact: the exact denoiser with the same sampler and NFE (the best a likelihood-trained model reaches); "
                         "model err = ln(gen_ppl / exact), fact. err = ln(exact / floor), nats per token")
    plot = _plot(run, rows)
    return {"rows": rows, "over_seeds": over_seeds, "floor": floor, "plot": str(plot) if plot else None}


# The quality columns of a row; each but val_ppl carries <name>_se, and a seed group's <name>_sd.
METRIC_COLUMNS = ("gen_ppl", "entropy", "acceptance", "ngram_jsd", "val_ppl")
# What may differ between the train runs of one seed group besides the seed: how they logged,
# reported, and how many threads computed them (which moves only the last digits).
NOT_THE_RUN = ("seed", "threads", "logging.", "quality.")


def seed_groups(rows: list[dict]) -> list[dict]:
    """Rows of train runs whose specs differ only in their seed, pooled per NFE: mean ± SD over
    the runs of each metric (as reproduce.py reports its arms). Groups of one run are left out."""
    groups: dict[str, dict[str, int]] = {}
    for source in dict.fromkeys(r["source"] for r in rows if r["nfe"] is not None):
        trained = train_run(source)
        if trained is None:
            continue
        spec = flatten(read_spec_file(trained.file(SPEC)))
        key = json.dumps({k: v for k, v in spec.items() if not k.startswith(NOT_THE_RUN)}, sort_keys=True)
        groups.setdefault(key, {})[source] = spec.get("seed", 0)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        for nfe in dict.fromkeys(r["nfe"] for r in rows if r["source"] in members):
            mine = [r for r in rows if r["source"] in members and r["nfe"] == nfe]
            out.append({
                "models": list(members), "seeds": [members[r["source"]] for r in mine], "nfe": nfe, **mean_sd(mine, METRIC_COLUMNS),
            })
    return out


def _file_name(reference: str) -> str:
    """A model reference (a path, a hub name) as part of a file name."""
    return re.sub(r"[^\w.-]+", "_", Path(reference).name or reference).strip("_.") or "model"


def read_samples(path: str) -> tuple[Samples, SyntheticLanguage | None]:
    """samples.jsonl: one object a line with a non-empty string `text` and optional `ids`, the
    token ids of the text, all of one length. Returns the samples and their language, if synthetic."""
    texts: list[str] = []
    ids: list[list[int] | None] = []
    lines: list[int] = []
    for number, row in read_jsonl(path, "text", "samples", "samples"):
        row_ids = row.get("ids")
        if not row["text"].strip():
            raise InputError(f"{path}:{number}: 'text' is empty")
        if row_ids is not None and not (
            isinstance(row_ids, list) and row_ids and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in row_ids)
        ):
            raise InputError(f"{path}:{number}: 'ids' must be a non-empty list of integers ≥ 0")
        if row_ids is not None and ids and ids[0] is not None and len(row_ids) != len(ids[0]):
            raise InputError(f"{path}:{number}: {len(row_ids)} ids where line {lines[0]} has {len(ids[0])}; samples of one file have one length")
        texts.append(row["text"])
        ids.append(row_ids)
        lines.append(number)
    language = _language_if_synthetic(texts)
    for number, row_ids in zip(lines, ids):
        if language is not None and row_ids is not None and max(row_ids) >= language.num_data_tokens:
            raise InputError(f"{path}:{number}: id {max(row_ids)} is outside the synthetic language's {language.num_data_tokens} tokens")
    complete = [i for i in ids if i is not None]
    return Samples(texts, complete if len(complete) == len(ids) else None), language


def _score(samples: Samples, language: SyntheticLanguage | None, spec: EvalSpec, seq_len: int | None) -> dict:
    evaluation = spec.evaluation
    result: dict = {"num_samples": len(samples.texts)}
    if "genppl" in evaluation.metrics:
        result.update(gen_ppl(
            samples.texts, samples.ids, language, evaluation.genppl_model, field="evaluation.genppl_model",
            oracle_epsilon=evaluation.oracle_epsilon, batch_size=evaluation.judge_batch_size, dtype=evaluation.judge_dtype,
            max_length=seq_len,
        ))
    if "entropy" in evaluation.metrics:
        tokens: list[list[int]] | list[list[str]] = samples.ids or [text.split() for text in samples.texts]
        result.update(sample_entropy_with_se(tokens))
    if "ngram_jsd" in evaluation.metrics:
        reference = _reference_texts(evaluation.reference, language, len(samples.texts), seq_len, spec.seed)
        if reference is not None:
            jsd = ngram_jsd(samples.texts, reference, evaluation.ngram_max)
            result["ngram_jsd"] = jsd["mean"]
            result["ngram_jsd_se"] = ngram_jsd_se(samples.texts, reference, evaluation.ngram_max, seed=spec.seed)
            result["ngram_jsd_by_n"] = {k: v for k, v in jsd.items() if k != "mean"}
    return result


def _language_for_model(reference: str, tokenizer) -> SyntheticLanguage | None:
    """The synthetic language a model was trained on, recognised by its tokenizer's vocabulary."""
    run = train_run(reference)
    data = run.recorded("data", DataSpec) if run else DataSpec()
    language = SyntheticLanguage(p_eos=data.p_eos)
    return language if language.owns(tokenizer) else None


def _language_if_synthetic(texts: list[str]) -> SyntheticLanguage | None:
    language = SyntheticLanguage()
    words = set(language.vocab)
    return language if all(word in words for text in texts for word in text.split()) else None


def _reference_texts(path: str | None, language: SyntheticLanguage | None, count: int, seq_len: int | None, seed: int) -> list[str] | None:
    if path:
        from tokendrift_cli.data.text import read_documents

        return read_documents(path, "evaluation.reference")
    if language is not None:
        length = seq_len or 32
        return [language.decode(row) for row in language.sample(max(count, 256), length, seed + 2).tolist()]
    return None


def _val_ppl(reference: str, model, process, language: SyntheticLanguage | None, spec: EvalSpec) -> float | None:
    """exp(validation NELBO per token): the perplexity bound on the run's held-out data."""
    from tokendrift_cli.data import load_data
    from tokendrift_cli.models.dit import as_denoiser

    run = train_run(reference)
    if run is None and language is None:
        return None  # no known held-out data for a model from elsewhere
    # The run's own data and seed: a corpus without a validation split is split by the seed, and
    # any other seed would hold out other blocks, some of which the run trained on.
    if run is not None:
        data_spec, seed = run.recorded("data", DataSpec), run.recorded_seed()
    else:
        data_spec, seed = DataSpec(seq_len=model.config.max_position_embeddings), spec.seed
    data, _ = load_data(data_spec, seed=seed)
    valid = data["validation"].with_format("torch")[: spec.evaluation.valid_sequences]["input_ids"]
    device = model.device
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    total, count = 0.0, 0
    for batch in valid.split(spec.sampling.batch_size):
        total += float(process.val_nelbo(as_denoiser(model), batch.to(device), generator)) * batch.numel()
        count += batch.numel()
    return math.exp(total / count)


def _plot(run: RunDir, rows: list[dict]) -> Path | None:
    """Gen.-PPL and entropy against NFE, a line per source; on the synthetic language with the oracle,
    the exact denoiser of each backbone (dashed) and the floor (dotted) beside them."""
    swept = [r for r in rows if r["nfe"] is not None and "gen_ppl" in r]
    if not swept:
        return None
    fig, axes = subplots(ncols=2)
    for source in dict.fromkeys(r["source"] for r in swept):
        mine = sorted((r for r in swept if r["source"] == source), key=lambda r: r["nfe"])
        label = Path(source).name or source
        for ax, metric in zip(axes[0], ("gen_ppl", "entropy")):
            if all(metric in r for r in mine):
                errors = [r.get(f"{metric}_se") or 0.0 for r in mine]
                ax.errorbar([r["nfe"] for r in mine], [r[metric] for r in mine], yerr=errors, marker="o", capsize=3, label=label)
    placed = [r for r in swept if "exact_gen_ppl" in r]
    for backbone in dict.fromkeys(r["backbone"] for r in placed):
        exact = sorted({(r["nfe"], r["exact_gen_ppl"]) for r in placed if r["backbone"] == backbone})
        axes[0, 0].plot([n for n, _ in exact], [g for _, g in exact], "k--", marker="x", linewidth=1, label=f"exact {backbone}")
    if placed:
        axes[0, 0].axhline(placed[0]["floor_gen_ppl"], color="grey", linestyle=":", label="floor (the language)")
    for ax, title in zip(axes[0], ("Gen.-PPL ± SE", "sample entropy (nats) ± SE")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[0, 0].set_yscale("log")
    return run.save_figure("genppl_vs_nfe.png", fig)
