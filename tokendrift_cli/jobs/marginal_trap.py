"""`tokendrift marginal-trap`: how far decoding masked slots from marginals is from the joint.

exact: sentences of the synthetic language, each with the k-slot set (within `max_span`
positions) whose exact total correlation is highest, i.e. where agreement binds the slots.
joint: a tiny user-given joint. model: a trained masked denoiser's own marginals and
conditionals on the same slot pairs, with validity judged by the exact grammar.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import torch
from rich.markup import escape

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.diffusion.base import exclude_mask
from tokendrift_cli.errors import InputError
from tokendrift_cli.files import DuplicateKey, read_user_text, unique_keys
from tokendrift_cli.metrics.trap import JointTable, Validity, joint_from_language, parse_joint
from tokendrift_cli.plots import subplots
from tokendrift_cli.runs import RunDir, latest_train_run
from tokendrift_cli.spec import ModelFacts, TrapCommandSpec, check_against_model
from tokendrift_cli.ui import UI


def run(spec: TrapCommandSpec, run: RunDir, ui: UI) -> dict:
    trap = spec.trap
    rng = np.random.default_rng(spec.seed)
    if trap.joint:
        result = _joint_file(trap.joint, trap.num_samples, rng, run)
    elif trap.mode == "exact":
        result = _exact(spec, rng, run)
    else:
        result = _model(spec, rng, run, ui)
    run.write_json("trap.json", result)
    _print(ui, result)
    return result


# ---------------------------------------------------------------------------- modes


def _joint_file(path: str, num_samples: int, rng: np.random.Generator, run: RunDir) -> dict:
    try:
        data = json.loads(read_user_text(path, "trap.joint"), object_pairs_hook=unique_keys)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    except DuplicateKey as err:
        raise InputError(f"{path}: {err}") from None
    table = parse_joint(data, path)
    by_step = {s: table.decode(s, num_samples, rng) for s in range(1, table.k + 1)}
    result = {"mode": "joint", "source": path, "k": table.k, **_table_stats([table]), **_validity(by_step, table.k)}
    result["invalid_examples"] = _examples({" ".join(c): n for c, n in by_step[table.k][1].items()})
    _plot_heatmap(run, table, " / ".join(" ".join(c) for c in list(table.probs)[:2]))
    _plot_validity(run, result)
    return result


def _exact(spec: TrapCommandSpec, rng: np.random.Generator, run: RunDir) -> dict:
    trap = spec.trap
    language = SyntheticLanguage()
    contexts, tables = _bound_contexts(language, trap.k, trap.max_span, trap.num_contexts, trap.seq_len, spec.seed)
    by_step = {}
    for s in range(1, trap.k + 1):
        valid = 0
        invalid: dict[str, int] = {}
        for i, ((ids, slots), table) in enumerate(zip(contexts, tables)):
            share = trap.num_samples // len(tables) + (i < trap.num_samples % len(tables))
            if share == 0:
                continue
            validity, bad = table.decode(s, share, rng)
            valid += validity.valid
            for combo, count in bad.items():
                text = _fill(language, ids, slots, combo)
                invalid[text] = invalid.get(text, 0) + count
        by_step[s] = (Validity(valid, trap.num_samples), invalid)
    result = {"mode": "exact", "k": trap.k, "num_contexts": len(tables), **_table_stats(tables), **_validity(by_step, trap.k)}
    result["invalid_examples"] = _examples(by_step[trap.k][1])
    strongest = max(range(len(tables)), key=lambda i: tables[i].total_correlation_bits())
    ids, slots = contexts[strongest]
    _plot_heatmap(run, tables[strongest], _fill(language, ids, slots, tuple("_" * len(slots))), language)
    _plot_validity(run, result)
    return result


def _model(spec: TrapCommandSpec, rng: np.random.Generator, run: RunDir, ui: UI) -> dict:
    from tokendrift_cli.models.loading import load_denoiser, load_tokenizer_for

    trap = spec.trap
    reference = trap.model or latest_train_run(note=ui.note)
    model = load_denoiser(reference, weights=trap.weights).eval()
    check_against_model(spec, ModelFacts(model.config.max_position_embeddings, model.config.vocab_size))
    language = SyntheticLanguage()
    if model.config.mask_token_id is None:
        raise InputError(f"trap.model: {reference} is a {model.config.backbone} backbone; model mode needs a masked one")
    if not language.owns(load_tokenizer_for(reference)):
        raise InputError(f"trap.model: {reference} was not trained on the synthetic language, whose grammar judges validity")
    contexts, exact_tables = _bound_contexts(language, 2, trap.max_span, trap.num_contexts, trap.seq_len, spec.seed)
    estimates = [_model_pair(model, ids, slots, trap.top_m, trap.tau) for ids, slots in contexts]

    per_context = max(1, trap.num_samples // len(contexts))
    parallel, sequential = Validity(0, 0), Validity(0, 0)
    invalid: dict[str, int] = {}
    for (ids, slots), estimate in zip(contexts, estimates):
        for scheme, counter in (("parallel", parallel), ("sequential", sequential)):
            samples = _model_decode(model, ids, slots, estimate, scheme, per_context, rng)
            accepted = language.accepts(samples)
            counter.valid += int(accepted.sum())
            counter.total += len(samples)
            if scheme == "parallel":
                for row in samples[~accepted]:
                    text = _fill(language, row, slots, tuple(row[slots].tolist()))
                    invalid[text] = invalid.get(text, 0) + 1
    result = {
        "mode": "model",
        "model": reference,
        "k": 2,
        "num_contexts": len(contexts),
        "estimated_total_correlation_bits": float(np.mean([e["total_correlation_bits"] for e in estimates])),
        "incoherence_mass": float(np.mean([e["incoherence_mass"] for e in estimates])),
        "exact": _table_stats(exact_tables),
        **_validity({1: (sequential, {}), 2: (parallel, invalid)}, 2),
        "invalid_examples": _examples(invalid),
    }
    strongest = max(range(len(contexts)), key=lambda i: exact_tables[i].total_correlation_bits())
    ids, slots = contexts[strongest]
    context = _fill(language, ids, slots, tuple("_" * len(slots)))
    _plot_heatmap(run, JointTable(estimates[strongest]["joint"]), f"model joint (top-{trap.top_m}) vs product: {context}", language)
    _plot_validity(run, result)
    return result


# ---------------------------------------------------------------------------- pieces


def _bound_contexts(language, k, max_span, num_contexts, seq_len, seed):
    """Sentences with the k-slot set of highest exact total correlation each (those with none > 0 skipped)."""
    contexts, tables = [], []
    for ids in language.sample(num_contexts, seq_len, seed):
        best, best_table = None, None
        for slots in itertools.combinations(range(seq_len), k):
            if slots[-1] - slots[0] > max_span:
                continue
            table = joint_from_language(language, ids, list(slots))
            if best_table is None or table.total_correlation_bits() > best_table.total_correlation_bits():
                best, best_table = list(slots), table
        if best_table is not None and best_table.total_correlation_bits() > 1e-9:
            contexts.append((ids, best))
            tables.append(best_table)
    if not tables:
        raise InputError("trap: no slot set with dependent tokens found; raise trap.num_contexts or trap.max_span")
    return contexts, tables


@torch.no_grad()
def _model_pair(model, ids: torch.Tensor, slots: list[int], top_m: int, tau: float) -> dict:
    """The model's marginals of both slots (one pass), its conditionals p(b | a) for the top-m
    candidates a of the first slot (m passes, batched), and what they imply."""
    a_slot, b_slot = slots
    mask_id = model.config.mask_token_id
    both = ids.clone()
    both[slots] = mask_id
    probs = _probs(model, both.unsqueeze(0), mask_id)[0]
    p_a, p_b = probs[a_slot], probs[b_slot]
    candidates = p_a.topk(top_m).indices
    clamped = both.repeat(top_m, 1)
    clamped[:, a_slot] = candidates
    p_b_given_a = _probs(model, clamped, mask_id)[:, b_slot]  # [m, V]
    weights = p_a[candidates] / p_a[candidates].sum()
    joint = weights[:, None] * p_b_given_a
    product = weights[:, None] * p_b[None, :]
    incoherent = float((product * (p_b_given_a < tau)).sum())
    table = {(int(a), int(b)): float(joint[i, b]) for i, a in enumerate(candidates) for b in torch.nonzero(joint[i] > 1e-12).flatten().tolist()}
    return {
        "joint": table,
        "total_correlation_bits": JointTable(table).total_correlation_bits(),
        "incoherence_mass": incoherent,
        "p_a": p_a, "p_b": p_b, "candidates": candidates, "p_b_given_a": p_b_given_a,
    }


def _model_decode(model, ids, slots, estimate, scheme: str, n: int, rng: np.random.Generator) -> torch.Tensor:
    """n completions of the pair: both slots from the marginals (parallel), or the first from its
    marginal and the second from the model's conditional given it (sequential, one batched pass)."""
    a_slot, b_slot = slots
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    samples = ids.repeat(n, 1)
    samples[:, a_slot] = torch.multinomial(estimate["p_a"], n, replacement=True, generator=generator)
    if scheme == "parallel":
        samples[:, b_slot] = torch.multinomial(estimate["p_b"], n, replacement=True, generator=generator)
    else:
        masked = samples.clone()
        masked[:, b_slot] = model.config.mask_token_id
        conditional = _probs(model, masked, model.config.mask_token_id)[:, b_slot]
        samples[:, b_slot] = torch.multinomial(conditional, 1, generator=generator).squeeze(1)
    return samples


def _probs(model, ids: torch.Tensor, mask_id: int) -> torch.Tensor:
    return exclude_mask(model(input_ids=ids).logits, mask_id).softmax(-1)


def _table_stats(tables: list[JointTable]) -> dict:
    return {
        "invalid_mass": float(np.mean([t.invalid_mass() for t in tables])),
        "total_correlation_bits": float(np.mean([t.total_correlation_bits() for t in tables])),
        "total_variation": float(np.mean([t.total_variation() for t in tables])),
    }


def _validity(by_step: dict[int, tuple[Validity, dict]], k: int) -> dict:
    def entry(v: Validity) -> dict:
        low, high = v.wilson()
        return {"rate": v.rate, "low": low, "high": high, "n": v.total}

    return {
        "validity_parallel": entry(by_step[k][0]),
        "validity_sequential": entry(by_step[1][0]),
        "validity_by_tokens_per_step": {str(s): entry(v) for s, (v, _) in sorted(by_step.items())},
    }


def _examples(invalid: dict[str, int], limit: int = 10) -> list[dict]:
    return [{"text": text, "count": count} for text, count in sorted(invalid.items(), key=lambda kv: -kv[1])[:limit]]


def _fill(language: SyntheticLanguage, ids: torch.Tensor, slots: list[int], combo: tuple) -> str:
    words = [language.vocab[i] for i in ids.tolist()]
    for slot, token in zip(slots, combo):
        words[slot] = f"[{token if isinstance(token, str) else language.vocab[token]}]"
    return " ".join(words)


def _print(ui: UI, result: dict) -> None:
    rows = [{"measure": key, "value": result[key]} for key in ("invalid_mass", "total_correlation_bits", "total_variation",
                                                               "estimated_total_correlation_bits", "incoherence_mass") if key in result]
    for name in ("validity_parallel", "validity_sequential"):
        v = result[name]
        rows.append({"measure": name, "value": f"{v['rate']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"})
    ui.table(f"tokendrift marginal-trap · {result['mode']}", rows)
    for example in result["invalid_examples"][:5]:
        ui.console.print(f"  [red]✗[/] {escape(example['text'])}  ×{example['count']}", highlight=False)
    if not result["invalid_examples"]:
        ui.note("no invalid combination among the parallel draws")


def _plot_heatmap(run: RunDir, table: JointTable, title: str, language: SyntheticLanguage | None = None) -> None:
    """Joint vs product of marginals over the first two slots (marginalising the rest)."""
    pairs: dict = {}
    for combo, p in table.probs.items():
        pairs[combo[:2]] = pairs.get(combo[:2], 0.0) + p
    two = JointTable(pairs)
    rows, cols = (sorted(m, key=m.__getitem__, reverse=True)[:12] for m in two.marginals)
    label = (lambda t: language.vocab[t]) if language is not None and isinstance(rows[0], int) else str
    # One colour scale for both panels, so equal colours are equal probabilities.
    top = max([*pairs.values(), *(two.marginals[0][a] * two.marginals[1][b] for a in rows for b in cols)])
    fig, axes = subplots(ncols=2, width=4.5)
    for ax, name, value in ((axes[0, 0], "joint", lambda a, b: pairs.get((a, b), 0.0)),
                            (axes[0, 1], "product of marginals", lambda a, b: two.marginals[0][a] * two.marginals[1][b])):
        image = ax.imshow([[value(a, b) for b in cols] for a in rows], cmap="magma", vmin=0, vmax=top)
        ax.set_xticks(range(len(cols)), [label(c) for c in cols], rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), [label(r) for r in rows], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("second slot")
    axes[0, 0].set_ylabel("first slot")
    fig.colorbar(image, ax=list(axes[0]), label="probability", shrink=0.8)
    fig.suptitle(title, fontsize=8)
    run.save_figure("joint_vs_product.png", fig)


def _plot_validity(run: RunDir, result: dict) -> None:
    by_step = result["validity_by_tokens_per_step"]
    steps = sorted(int(s) for s in by_step)
    fig, axes = subplots(ncols=2, width=4.5)
    for x, name in enumerate(("validity_sequential", "validity_parallel")):
        v = result[name]
        axes[0, 0].bar(x, v["rate"], yerr=[[v["rate"] - v["low"]], [v["high"] - v["rate"]]], capsize=6)
    axes[0, 0].set_xticks([0, 1], ["sequential", "parallel"])
    axes[0, 0].set(ylim=(0, 1.05), ylabel="valid share (Wilson 95 %)", title="decoding the slots")
    rates = [by_step[str(s)]["rate"] for s in steps]
    errors = [[by_step[str(s)]["rate"] - by_step[str(s)]["low"] for s in steps], [by_step[str(s)]["high"] - by_step[str(s)]["rate"] for s in steps]]
    axes[0, 1].errorbar(steps, rates, yerr=errors, marker="o", capsize=4)
    axes[0, 1].set(xticks=steps, ylim=(0, 1.05), xlabel="tokens decoded per step", title="validity vs parallelism")
    run.save_figure("validity.png", fig)
