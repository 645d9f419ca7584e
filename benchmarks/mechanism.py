"""Does the drift loss reward confidence at every masked position? The sign of its logit gradient on entropy.

docs/results.md once explained MDLM's loss under TokenDrift by "the feature loss rewards
confidence at every masked position, whatever the noise level". This measures it. For a
checkpoint, at each noise level t of a grid: clean sequences are noised by the backbone's own
process, the denoiser predicts, and the TokenDrift drift term (the paper's defaults, queues first
filled at random noise levels as in training) gives its gradient g on the logits. A gradient step
ℓ ← ℓ − ηg changes each predicted position's entropy H by

    dH/dη = −⟨∇_ℓ H, g⟩,  ∇_ℓ H = −p ⊙ (log p + H)

(first order). Reported per t: the mean of dH/dη over predicted positions (MDLM: masked; DUO:
all), the share of positions it lowers, and the same for the diffusion loss's gradient, the
baseline's signal. "Rewards confidence everywhere" predicts dH/dη < 0 at nearly every position
and every t.

    python benchmarks/mechanism.py --model RUN_OR_FOLDER [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from tokendrift_cli.data import load_data
from tokendrift_cli.drift.encoders import build_encoder
from tokendrift_cli.drift.objective import TokenDrift, logit_gradient
from tokendrift_cli.generation import load_for_sampling
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.runs import atomic_write_text
from tokendrift_cli.spec.data import DataSpec
from tokendrift_cli.spec.drift import DriftSpec

TIMES = [0.1, 0.3, 0.5, 0.7, 0.9]


def entropy_rate_of_change(log_probs: torch.Tensor, logit_grad: torch.Tensor) -> torch.Tensor:
    """d H(softmax(ℓ − η g)) / dη at η = 0, per position [..., L]: −⟨∇_ℓ H, g⟩ with ∇_ℓ H = −p (log p + H).
    Entries at -inf (SUBS) have p = 0 and contribute nothing."""
    p = log_probs.exp()
    log_p = log_probs.masked_fill(p == 0, 0.0)
    entropy = -(p * log_p).sum(-1, keepdim=True)
    return (p * (log_p + entropy) * logit_grad).sum(-1)


def measure(model_ref: str, num_batches: int, batch_size: int, seed: int) -> list[dict]:
    model, _, process = load_for_sampling(model_ref)
    model.requires_grad_(False)
    seq_len = model.config.max_position_embeddings
    spec = DriftSpec()  # the paper's defaults
    data, _ = load_data(DataSpec(seq_len=seq_len), seed=seed)
    measured = data["validation"].with_format("torch")[:]["input_ids"]
    filling = data["train"].with_format("torch")[: spec.queue_size]["input_ids"]
    objective = TokenDrift(spec, build_encoder(spec, model))
    generator = torch.Generator().manual_seed(seed)
    denoiser = as_denoiser(model)

    def predicted(x0: torch.Tensor, t: torch.Tensor):
        """(log p(x0 | x_t) as a leaf that takes gradients, x_t, the predicted positions)."""
        xt = process.q_xt(x0, t, generator)
        with torch.no_grad():
            log_probs = process.predict(denoiser, xt, process.schedule.sigma(t))
        positions = xt == model.config.mask_token_id if model.config.backbone == "mdlm" else torch.ones_like(xt, dtype=torch.bool)
        return log_probs.requires_grad_(True), xt, positions

    # Fill the queues as training would: batches at random noise levels.
    for x0 in filling.split(batch_size):
        log_probs, _, _ = predicted(x0, torch.rand(x0.shape[0], generator=generator) * 0.998 + 0.001)
        objective.drift_term(log_probs, x0, None)
    rows = []
    for t_value in TIMES:
        drift_changes, diffusion_changes = [], []
        for x0 in measured.split(batch_size)[:num_batches]:
            t = torch.full((x0.shape[0],), t_value)
            log_probs, xt, positions = predicted(x0, t)
            _, grad, _ = objective.drift_term(log_probs, x0, None)
            drift_changes.append(entropy_rate_of_change(log_probs.detach(), logit_gradient(log_probs, grad))[positions])
            (base,) = torch.autograd.grad(process.nelbo_per_token(log_probs, xt, x0, t).mean(), log_probs)
            diffusion_changes.append(entropy_rate_of_change(log_probs.detach(), logit_gradient(log_probs, base))[positions])
        drift, diffusion = torch.cat(drift_changes), torch.cat(diffusion_changes)
        rows.append({
            "t": t_value, "positions": int(drift.numel()),
            "drift_mean": float(drift.mean()), "drift_share_sharpening": float((drift < 0).double().mean()),
            "diffusion_mean": float(diffusion.mean()), "diffusion_share_sharpening": float((diffusion < 0).double().mean()),
        })
    return rows


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}` — dH/dη of a gradient step on the logits, per predicted position "
             "(negative: the step sharpens the prediction); share = positions it sharpens.", "",
             "| t | positions | drift: mean dH/dη | drift: share sharpened | diffusion: mean dH/dη | diffusion: share sharpened |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['t']:g} | {r['positions']} | {r['drift_mean']:+.3e} | {r['drift_share_sharpening']:.3f} | "
                     f"{r['diffusion_mean']:+.3e} | {r['diffusion_share_sharpening']:.3f} |")
    shares = [r["drift_share_sharpening"] for r in result["rows"]]
    lines += ["", f"Drift: sharpens {min(shares):.0%}–{max(shares):.0%} of predicted positions across t "
              f"(mean over t {statistics.mean(shares):.0%})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a train run or model folder (MDLM or DUO)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help="file stem (default: mechanism-<backbone>)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rows = measure(args.model, args.batches, args.batch_size, args.seed)
    backbone = load_for_sampling(args.model)[0].config.backbone
    result = {"model": args.model, "backbone": backbone, "rows": rows,
              "command": f"python benchmarks/mechanism.py --model {args.model} --batches {args.batches} --batch-size {args.batch_size}"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"mechanism-{backbone}"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / f"{stem}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
