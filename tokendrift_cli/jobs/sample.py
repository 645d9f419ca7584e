"""`tokendrift sample`: fixed-NFE generation with the backbone's own sampler."""

from __future__ import annotations

from rich.markup import escape

from tokendrift_cli.generation import generate, load_for_sampling, sample_rows
from tokendrift_cli.metrics.text_stats import sample_entropy
from tokendrift_cli.runs import RunDir, latest_train_run
from tokendrift_cli.spec import ModelFacts, SampleSpec, check_against_model
from tokendrift_cli.ui import UI


def run(spec: SampleSpec, run: RunDir, ui: UI) -> dict:
    reference = spec.model or latest_train_run(note=ui.note)
    model, tokenizer, process = load_for_sampling(reference, spec.weights, spec.sampling.seq_len, spec.sampling.compile, ui.note)
    check_against_model(spec, ModelFacts(model.config.max_position_embeddings, model.config.vocab_size))
    generation = generate(model, process, spec.sampling, spec.sampling.nfe, spec.seed, ui)
    texts = tokenizer.batch_decode(generation.ids.tolist())
    rows = sample_rows(generation, texts)
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
