"""`tokendrift probe`: one forward pass over each prompt followed by N masks (Jin et al. 2025).

Prompts in a batch are left-padded (with attention masked out), so the N masked slots sit at the
same absolute positions in every row. Only the masked slice is turned into float32
log-probabilities, with the mask token excluded.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import torch

from tokendrift_cli.data.jsonl import read_jsonl
from tokendrift_cli.diffusion.base import exclude_mask
from tokendrift_cli.errors import InputError
from tokendrift_cli.files import read_user_text
from tokendrift_cli.metrics.probe_stats import PositionStats, categorize, collapse_onset, entropy
from tokendrift_cli.models.adapters import MaskedLMAdapter, load_adapter
from tokendrift_cli.models.exact import is_exact
from tokendrift_cli.plots import subplots
from tokendrift_cli.runs import RunDir, latest_train_run
from tokendrift_cli.spec import ModelFacts, ProbeCommandSpec, check_against_model
from tokendrift_cli.ui import UI


def run(spec: ProbeCommandSpec, run: RunDir, ui: UI) -> dict:
    probe = spec.probe
    prompts = _load_prompts(spec)
    model_ref = probe.model or latest_train_run(note=ui.note)
    adapter = load_adapter(probe, model_ref)
    if is_exact(model_ref):
        _in_the_language(adapter, prompts, model_ref)
    longest = max(len(adapter.tokenize_prompt(p["prompt"])) for p in prompts)
    check_against_model(spec, ModelFacts(adapter.length, adapter.vocab_size, prompt_tokens=longest))
    result_rows, stats = probe_prompts(adapter, prompts, probe.num_masks, probe.top_k, probe.batch_size, ui)
    run.write_jsonl("per_prompt.jsonl", result_rows)
    positions = stats.rows()
    run.write_json("positions.json", positions)
    run.write_text("positions.csv", _csv(positions))
    summary = {
        "model": model_ref,
        "chat_template": adapter.use_template,
        "num_masks": probe.num_masks,
        "top_k": probe.top_k,
        "num_prompts": len(prompts),
        "collapse_onset": collapse_onset(positions),
        "mean_entropy_first": positions[0]["mean_entropy"],
        "mean_entropy_last": positions[-1]["mean_entropy"],
    }
    run.write_json("summary.json", summary)
    _plots(run, positions)
    shown = [positions[p - 1] for p in _powers_of_two(probe.num_masks)]
    # Two narrow tables rather than one wide one: each fits an 80-column terminal.
    ui.table(f"tokendrift probe · {Path(model_ref).name or model_ref} · {len(prompts)} prompts", [
        {"position": r["position"], "entropy": r["mean_entropy"], "top1_prob": r["mean_top1_prob"],
         "prompt_div": r["prompt_divergence_bits"], "top-1 tokens": ", ".join(t for t, _ in r["top1_tokens"][:3])}
        for r in shown
    ])
    ui.table("what the top-1 token is (share of prompts)", [
        {"position": r["position"], "eos": r["share_eos"], "punctuation": r["share_punctuation"],
         "stopword": r["share_stopword"], "content": r["share_content"]}
        for r in shown
    ])
    return summary


def probe_prompts(adapter: MaskedLMAdapter, prompts: list[dict], num_masks: int, top_k: int, batch_size: int, ui: UI):
    """Per-prompt top-k rows and the aggregated per-position statistics."""
    eos_ids = set(adapter.eos_ids)
    rows, stats = [], None
    with ui.progress() as progress:
        task = progress.add_task("probe", total=len(prompts), info="")
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            encoded = [adapter.tokenize_prompt(p["prompt"]) for p in batch]
            ids, attention = _left_pad(encoded, num_masks, adapter.mask_id, adapter.pad_id)
            probs = exclude_mask(adapter.logits(ids, attention)[:, -num_masks:].float(), adapter.mask_id).log_softmax(-1).exp()
            top_probs, top_ids = probs.topk(top_k, dim=-1)
            entropies = entropy(probs)
            if stats is None:
                stats = PositionStats(num_masks, probs.shape[-1])
            top1_tokens, top1_categories = [], []
            for row, prompt in enumerate(batch):
                tokens = [[adapter.decode_token(int(i)) for i in slot] for slot in top_ids[row].tolist()]
                top1_tokens.append([slot[0] for slot in tokens])
                top1_categories.append([categorize(slot[0], int(i), eos_ids) for slot, i in zip(tokens, top_ids[row, :, 0])])
                rows.append({"id": prompt["id"], "prompt": prompt["prompt"], "positions": [
                    {"position": j + 1, "top_ids": top_ids[row, j].tolist(), "top_tokens": tokens[j],
                     "top_probs": [round(p, 6) for p in top_probs[row, j].tolist()], "entropy": round(float(entropies[row, j]), 6)}
                    for j in range(num_masks)
                ]})
            stats.update(probs, top1_tokens, top1_categories)
            progress.update(task, advance=len(batch))
    return rows, stats


def _in_the_language(adapter: MaskedLMAdapter, prompts: list[dict], model_ref: str) -> None:
    """The exact denoiser knows the synthetic language only: a prompt with another word has no posterior."""
    for prompt in prompts:
        if adapter.tokenizer.unk_token_id in adapter.tokenize_prompt(prompt["prompt"]):
            raise InputError(f"probe: prompt {prompt['id']} has words outside the synthetic language, the only one {model_ref} knows")


def _left_pad(prompts: list[list[int]], num_masks: int, mask_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts)) + num_masks
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        sequence = prompt + [mask_id] * num_masks
        ids[row, width - len(sequence):] = torch.tensor(sequence)
        attention[row, width - len(sequence):] = 1
    return ids, attention


def _load_prompts(spec: ProbeCommandSpec) -> list[dict]:
    probe = spec.probe
    if probe.prompt:
        prompts = [{"id": 0, "prompt": probe.prompt}]
    elif probe.from_lima:
        prompts = prompts_from_lima(probe.from_lima, probe.num_prompts or 100, spec.seed)
    elif probe.prompts:
        prompts = read_prompts(probe.prompts)
    else:
        prompts = _default_prompts(probe.num_prompts or 32, spec.seed)
    return prompts[: probe.num_prompts] if probe.num_prompts else prompts


def read_prompts(path: str) -> list[dict]:
    rows = read_jsonl(path, "prompt", "prompts", "probe.prompts")
    for number, row in rows:
        if not row["prompt"].strip():
            raise InputError(f"{path}:{number}: 'prompt' is empty")
    return [{"id": row.get("id", index), "prompt": row["prompt"]} for index, (_, row) in enumerate(rows)]


def prompts_from_lima(path: str, n: int, seed: int) -> list[dict]:
    """The first user turn of n conversations drawn (seeded) from a local LIMA train.jsonl.
    LIMA is gated and non-commercial: its text is read from the user's copy, never shipped."""
    turns = []
    for number, line in enumerate(read_user_text(path, "probe.from_lima").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            conversation = json.loads(line)["conversations"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: expected a JSON object with a 'conversations' list") from None
        if conversation and isinstance(conversation[0], str):
            turns.append({"id": number - 1, "prompt": conversation[0]})
    if not turns:
        raise InputError(f"{path}: no conversations")
    return random.Random(seed).sample(turns, min(n, len(turns)))


def _default_prompts(n: int, seed: int) -> list[dict]:
    """Prompts the package builds itself: the opening words of sentences of the synthetic language."""
    from tokendrift_cli.data.synthetic import SyntheticLanguage

    language = SyntheticLanguage()
    generator = random.Random(seed)
    samples = language.sample(n, 8, seed).tolist()
    return [{"id": i, "prompt": language.decode(row[: generator.randint(2, 6)])} for i, row in enumerate(samples)]


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "top1_tokens": " ".join(f"{t}:{c}" for t, c in row["top1_tokens"])})
    return buffer.getvalue()


def _powers_of_two(n: int) -> list[int]:
    shown, p = [], 1
    while p <= n:
        shown.append(p)
        p *= 2
    return shown if shown[-1] == n else shown + [n]


def _plots(run: RunDir, rows: list[dict]) -> None:
    positions = [r["position"] for r in rows]
    fig, axes = subplots(ncols=2)
    axes[0, 0].plot(positions, [r["mean_entropy"] for r in rows])
    axes[0, 0].set(xlabel="masked position", ylabel="mean entropy (nats)", title="entropy by distance")
    axes[0, 1].plot(positions, [r["mean_top1_prob"] for r in rows], color="tab:orange")
    axes[0, 1].set(xlabel="masked position", ylabel="mean top-1 probability", title="confidence by distance")
    run.save_figure("entropy_by_position.png", fig)

    fig, axes = subplots()
    bottom = [0.0] * len(rows)
    for category in ("content", "stopword", "punctuation", "eos"):
        shares = [r[f"share_{category}"] for r in rows]
        axes[0, 0].bar(positions, shares, bottom=bottom, width=1.0, label=category)
        bottom = [b + s for b, s in zip(bottom, shares)]
    axes[0, 0].set(xlabel="masked position", ylabel="share of prompts' top-1", title="what the top-1 token is")
    axes[0, 0].legend(fontsize=7)
    run.save_figure("categories_by_position.png", fig)

    totals: dict[str, int] = {}
    for r in rows:
        for token, count in r["top1_tokens"]:
            totals[token] = totals.get(token, 0) + count
    frequent = sorted(totals, key=totals.__getitem__, reverse=True)[:15]
    grid = [[dict(r["top1_tokens"]).get(token, 0) for r in rows] for token in frequent]
    fig, axes = subplots(width=8, height=0.3 * len(frequent) + 1.5)
    # extent: columns centred on positions 1..N, as the other probe plots count them.
    image = axes[0, 0].imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                              extent=(positions[0] - 0.5, positions[-1] + 0.5, len(frequent) - 0.5, -0.5))
    axes[0, 0].set_yticks(range(len(frequent)), [repr(t) for t in frequent], fontsize=7)
    axes[0, 0].set(xlabel="masked position", title="frequent top-1 tokens by position")
    fig.colorbar(image, ax=axes[0, 0], label="prompts")
    run.save_figure("top1_heatmap.png", fig)
