"""A small GPT-2 trained on the built-in synthetic language: a learned Gen.-PPL judge beside the oracle.

The exact oracle (`--genppl-model oracle`) is the language's own likelihood. The paper's judge is
a learned LM (GPT-2 Large), which may reward low-entropy text more than the truth does. This
script trains such a judge on the synthetic language, with the language's own tokenizer, and
saves it (model and tokenizer, `save_pretrained`) as a folder that `tokendrift eval
--genppl-model <folder>` loads as it loads `gpt2-large`. `benchmarks/judge_gap.py` uses it.

    python benchmarks/train_judge.py            # a few minutes on one core
    python benchmarks/train_judge.py --quick    # seconds, for smoke tests

Writes <out>/judge[-quick]/ (the judge, with heldout.json) and <out>/train_judge[-quick].json: the judge's held-out
NLL per token against the exact NLL of the same tokens under the language (their difference
estimates KL(language || judge) per token, which must be small and not below zero beyond
noise), beside the exact expectation and the entropy rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tokendrift_cli.data.synthetic import SyntheticLanguage

PLANS = {
    # seq_len 32 is reproduce.py's full length; its quick runs (16) are a prefix of the same stream.
    "full": dict(layers=2, width=128, heads=4, steps=1000, batch_size=64, lr=3e-3, warmup=50, seq_len=32, heldout=4096),
    "quick": dict(layers=2, width=64, heads=2, steps=150, batch_size=32, lr=3e-3, warmup=10, seq_len=32, heldout=512),
}
ROOT = Path(__file__).resolve().parent.parent
HELDOUT_SEED = 1_000_000_007  # training batches use seeds 0..steps-1


def train(plan: dict, folder: Path) -> dict:
    """Train the judge on fresh samples of the language every step and save it to `folder`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    language = SyntheticLanguage()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=language.vocab_size, n_positions=plan["seq_len"], n_embd=plan["width"], n_layer=plan["layers"],
        n_head=plan["heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # fresh data every step: nothing to overfit
        bos_token_id=language.eos_id, eos_token_id=language.eos_id,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan["lr"], weight_decay=0.0)
    steps, warmup = plan["steps"], plan["warmup"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    for step in range(steps):
        # Sequences start at a document start, as the samplers' sequences do.
        ids = language.sample(plan["batch_size"], plan["seq_len"], step)
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % max(steps // 10, 1) == 0:
            print(f"step {step + 1}/{steps}: loss {loss.item():.4f}", flush=True)
    save(model, language, folder)
    return {"parameters": sum(p.numel() for p in model.parameters())}


def save(model, language: SyntheticLanguage, folder: Path) -> None:
    """Model and the language's tokenizer in one folder, replaced whole so no half-written judge is left."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    model.save_pretrained(tmp)
    language.tokenizer().save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


@torch.no_grad()
def heldout(folder: Path, plan: dict) -> dict:
    """The saved judge, loaded as `tokendrift eval` loads it, on fresh samples of the language.

    Every token but the first is scored (the judge has no BOS, as in the Gen.-PPL protocol); the
    exact reference is log p(x_2..L | x_1) = log p(x_1..L) - log p(x_1) of the same sequences."""
    from tokendrift_cli.metrics.genppl import HFJudge

    language = SyntheticLanguage()
    judge = HFJudge(str(folder), device="cpu")
    ids = language.sample(plan["heldout"], plan["seq_len"], HELDOUT_SEED)
    # The saved tokenizer must give back the language's ids from the decoded text.
    encoded = judge.tokenizer([language.decode(row) for row in ids.tolist()], return_tensors="pt")["input_ids"]
    if not torch.equal(encoded, ids):
        raise SystemExit(f"{folder}: the saved tokenizer does not reproduce the language's token ids")
    judge_nll = torch.cat([
        F.cross_entropy(judge.model(batch).logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none").sum(1)
        for batch in ids.split(256)
    ]).double()
    exact_nll = -(language.log_prob(ids) - language.log_prob(ids[:, :1]))
    tokens = plan["seq_len"] - 1
    gap = ((judge_nll - exact_nll) / tokens).tolist()
    length = plan["seq_len"]
    return {
        "sequences": plan["heldout"], "seq_len": length, "scored_tokens_per_sequence": tokens,
        "judge_nll_per_token": float(judge_nll.mean()) / tokens,
        "exact_nll_per_token": float(exact_nll.mean()) / tokens,  # same tokens, the language's own probabilities
        "kl_per_token": statistics.mean(gap),  # judge minus exact on the same tokens
        "kl_per_token_se": statistics.stdev(gap) / math.sqrt(len(gap)),
        # The expectation of exact_nll_per_token: H(X_2..L | X_1) / (L - 1) = (L H_L - H_1) / (L - 1).
        "exact_expected_nll_per_token": (length * language.entropy(length) - language.entropy(1)) / tokens,
        "entropy_rate": language.entropy_rate(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    suffix = "" if mode == "full" else "-quick"
    folder = args.out / f"judge{suffix}"
    started = time.perf_counter()
    trained = train(plan, folder)
    seconds = time.perf_counter() - started
    checked = heldout(folder, plan)
    (folder / "heldout.json").write_text(json.dumps(checked, indent=2) + "\n")  # the judge's quality travels with it
    result = {
        "judge": os.path.relpath(folder, ROOT), "plan": {**plan, "mode": mode}, **trained, "train_seconds": seconds,
        "heldout": checked,
        "command": "python benchmarks/train_judge.py" + (" --quick" if args.quick else ""),
    }
    (args.out / f"train_judge{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    h = result["heldout"]
    print(f"judge: {folder} ({result['parameters']} parameters, {seconds:.0f} s)")
    print(f"held-out NLL per token {h['judge_nll_per_token']:.4f}, exact on the same tokens {h['exact_nll_per_token']:.4f}: "
          f"KL {h['kl_per_token']:.4f} ± {h['kl_per_token_se']:.4f} nats/token "
          f"(exact expectation {h['exact_expected_nll_per_token']:.4f}, entropy rate {h['entropy_rate']:.4f})")


if __name__ == "__main__":
    main()
