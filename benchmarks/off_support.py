"""Where does MDLM's few-step model error come from? Contexts the language cannot produce (issue 24).

The exact MDLM denoiser (models/exact.py) feeds the sampler P(x0 | the unmasked tokens). Parallel
decoding leaves contexts the language cannot produce; there that posterior is undefined, and the
exact denoiser reads the unmasked tokens through the judge's noisy channel (epsilon = 1e-3)
instead: a convention, not what likelihood training asks for. The forward process of the
language's own sequences never makes such a context, so training never shows it to a model and the
NELBO does not constrain the model there. Hypothesis: a trained MDLM's few-step model error comes
mostly from those contexts.

For an MDLM checkpoint at one NFE, with its own sampler, seed and length, judged by the oracle:

1. Where the trajectories go. The contexts each sampler step feeds the denoiser are recorded, for
   the exact denoiser, the model and the two hybrids below. Per step: the share of contexts the
   language cannot produce, and the mean KL(exact || model) per masked position on possible and
   on impossible contexts (on impossible ones "exact" is the epsilon-channel convention). Beside
   them the same on the forward process of the language's own sequences at the sampler's t values
   (every context possible: what the NELBO constrains). "path KL" sums r · KL over steps and masked
   positions, per token, r the step's reveal probability: on the exact denoiser's trajectories it
   is KL(exact sampler's path || model sampler's path) per token, split by where it is paid.
2. The causal test. "exact on / model off" (the exact denoiser on possible contexts, the model on
   impossible ones) and "model on / exact off" (the reverse), sampled and judged like the model and
   the exact denoiser (Gen.-PPL, acceptance, sample entropy, standard errors over samples; model
   error = ln(Gen.-PPL / the exact denoiser's)). The hypothesis predicts "exact on / model off"
   near the model and "model on / exact off" near the exact denoiser.

    python benchmarks/off_support.py [--model RUN_OR_FOLDER] [--nfe 4] [--out DIR] [--name STEM]
    python benchmarks/off_support.py --quick --model FOLDER     # seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from tokendrift_cli.diffusion.sampling import time_grid
from tokendrift_cli.generation import generate, load_for_sampling
from tokendrift_cli.metrics.oracle import OracleJudge
from tokendrift_cli.metrics.text_stats import sample_entropy_with_se
from tokendrift_cli.metrics.uncertainty import mean_se
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.models.exact import ExactDenoiser
from tokendrift_cli.runs import atomic_write_text
from tokendrift_cli.spec.sampling import SamplerSpec
from tokendrift_cli.ui import UI

DEFAULT_MODEL = "benchmarks/results/runs-converged/mdlm-init"  # the MDLM init of reproduce.py --init-study
PLANS = {"full": dict(num_samples=256, batch_size=64, seq_len=32), "quick": dict(num_samples=16, batch_size=8, seq_len=16)}


class Recording(nn.Module):
    """`model` as the sampler sees it, keeping each call's input ids: the contexts it was fed, in call order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.config = model, model.config
        self.contexts: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, input_ids: torch.Tensor, sigma: torch.Tensor | None = None) -> MaskedLMOutput:
        self.contexts.append(input_ids.cpu())
        return self.model(input_ids=input_ids, sigma=sigma)


class Hybrid(nn.Module):
    """One MDLM denoiser on the contexts the language can produce, another on those it cannot
    (`ExactDenoiser.possible` tells them apart), a whole sequence at a time."""

    def __init__(self, exact: ExactDenoiser, on_support: nn.Module, off_support: nn.Module):
        super().__init__()
        self.exact, self.on_support, self.off_support = exact, on_support, off_support
        self.config = on_support.config  # both are MDLM denoisers of the language's vocabulary

    @property
    def device(self) -> torch.device:
        return self.on_support.device

    def forward(self, input_ids: torch.Tensor, sigma: torch.Tensor | None = None) -> MaskedLMOutput:
        possible = self.exact.possible(input_ids).view(-1, 1, 1)
        on = self.on_support(input_ids=input_ids, sigma=sigma).logits
        off = self.off_support(input_ids=input_ids, sigma=sigma).logits
        dtype = torch.promote_types(on.dtype, off.dtype)  # the exact denoiser's are float64
        return MaskedLMOutput(logits=torch.where(possible, on.to(dtype), off.to(dtype)))


@torch.no_grad()
def compare(exact: ExactDenoiser, model: nn.Module, process, contexts: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> dict:
    """On contexts fed at time t (next s): the share the language cannot produce, and KL(exact || model)
    per masked position on possible and impossible ones, as a mean and as its path-KL share per token."""
    sigma = process.schedule.sigma(t).float().expand(len(contexts))
    exact_log_probs = process.predict(as_denoiser(exact), contexts, sigma).double()
    model_log_probs = process.predict(as_denoiser(model), contexts, sigma).double()
    p = exact_log_probs.exp()
    kl = torch.where(p > 0, p * (exact_log_probs - model_log_probs), 0.0).sum(-1)  # [B, L]; 0 log 0 = 0
    masked = contexts == process.mask_id
    possible = exact.possible(contexts)
    alpha_t, alpha_s = process.schedule.alpha(t), process.schedule.alpha(s)
    reveal = float((alpha_s - alpha_t) / (1 - alpha_t))  # each masked position's chance to be drawn at this step
    row = {"t": float(t), "contexts": len(contexts), "impossible_share": float((~possible).double().mean())}
    for name, rows in (("possible", possible), ("impossible", ~possible)):
        values = kl[rows][masked[rows]]
        row[f"masked_{name}"] = int(values.numel())
        row[f"kl_{name}"] = float(values.mean()) if values.numel() else None
        row[f"path_kl_{name}"] = reveal * float(values.sum()) / contexts.numel()
    return row


def measure(model_ref: str, nfe: int, num_samples: int, batch_size: int, seq_len: int, seed: int) -> dict:
    model, _, process = load_for_sampling(model_ref)
    if model.config.backbone != "mdlm":
        raise SystemExit(f"{model_ref}: an MDLM checkpoint is needed (every DUO context is possible)")
    exact, _, _ = load_for_sampling("exact:mdlm", seq_len=seq_len)
    judge = OracleJudge(exact.language, exact.epsilon)
    # Uncached, each batch makes one call per step, so a batch's k-th call is step k. MDLM's cache
    # only reuses a prediction that would be the same, so the samples are those eval draws.
    sampler = SamplerSpec(num_samples=num_samples, batch_size=batch_size, seq_len=seq_len, cache=False)
    times = time_grid(nfe, torch.device("cpu"))
    arms = {"exact": exact, "model": model,
            "exact on / model off": Hybrid(exact, exact, model), "model on / exact off": Hybrid(exact, model, exact)}
    samples, steps, nll = [], [], {}
    for arm, denoiser in arms.items():
        recording = Recording(denoiser)
        ids = generate(recording, process, sampler, nfe, seed, UI(quiet=True)).ids
        assert len(recording.contexts) == nfe * math.ceil(num_samples / batch_size)
        rows = [{"arm": arm, "step": step, **compare(exact, model, process, torch.cat(recording.contexts[step::nfe]), times[step], times[step + 1])}
                for step in range(nfe)]
        steps += rows
        nll[arm] = -exact.language.noisy_log_prob(ids, judge.epsilon) / seq_len  # per token, each sample
        samples.append({"arm": arm, **judge.score_ids(ids).as_row(), **sample_entropy_with_se(ids.tolist()),
                        **{f"path_kl_{k}": sum(r[f"path_kl_{k}"] for r in rows) for k in ("possible", "impossible")}})
    for row in samples:
        # ln(Gen.-PPL / exact's) is the mean per-token NLL difference; sample i of every arm comes from
        # the same seeded draws, so the differences are paired by sample (a smaller SE than unpaired).
        difference = nll[row["arm"]] - nll["exact"]
        row["model_error"], row["model_error_se"] = float(difference.mean()), mean_se(difference.tolist())
    # What training sees: the forward process of the language's own sequences at the sampler's t values.
    x0 = exact.language.sample(num_samples, seq_len, seed)
    generator = torch.Generator().manual_seed(seed)
    forward = [{"arm": "forward process", "step": step,
                **compare(exact, model, process, process.q_xt(x0, times[step].expand(num_samples), generator), times[step], times[step + 1])}
               for step in range(nfe)]
    # MDLM's NELBO − H = ∫ (-α'/(1 - α)) E[Σ_masked KL] / L dt, and E[masked share] = 1 - α: with the
    # log-linear α, (1 - eps) ∫ (KL per masked position) dt, of which this mean is a Riemann sum.
    forward_kl = sum(r["kl_possible"] for r in forward) / nfe
    return {"samples": samples, "steps": steps + forward, "forward_kl_mean": forward_kl}


def markdown(result: dict) -> str:
    def pm(row: dict, key: str, digits: int, sign: str = "") -> str:
        se = row.get(f"{key}_se")
        return f"{row[key]:{sign}.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")

    def kl(row: dict, name: str) -> str:
        return "—" if row[f"kl_{name}"] is None else f"{row[f'kl_{name}']:.3f} ({row[f'masked_{name}']})"

    lines = [f"`{result['command']}`", "",
             f"MDLM sampler at NFE {result['nfe']}, {result['num_samples']} samples of length {result['seq_len']}, seed "
             f"{result['seed']}, judged by the exact oracle (± one standard error over samples). Model error = ln(Gen.-PPL / exact's), "
             "its SE paired by sample (the arms share the seeded draws). "
             "\"exact on / model off\": the exact denoiser where the context is possible, the model where not; "
             "\"model on / exact off\": the reverse. Path KL: Σ over steps and masked positions of (reveal probability × "
             "KL(exact ‖ model)) per token, on each arm's own trajectories (on the exact denoiser's: the KL between the two "
             "samplers' paths), split by whether the context is possible. On impossible contexts \"exact\" is the epsilon-channel "
             "convention, not a posterior.", "",
             "| denoiser | Gen.-PPL | model err | acceptance | entropy | path KL: possible | path KL: impossible |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["samples"]:
        lines.append(f"| {r['arm']} | {pm(r, 'gen_ppl', 1)} | {pm(r, 'model_error', 3, '+')} | {pm(r, 'acceptance', 3)} | "
                     f"{pm(r, 'entropy', 3)} | {r['path_kl_possible']:.3f} | {r['path_kl_impossible']:.3f} |")
    lines += ["", "Per sampler step: the contexts fed to the denoiser, the share the language cannot produce, and the mean "
              "KL(exact ‖ model) per masked position (masked positions counted in brackets). \"forward process\": the "
              "language's own samples noised at the step's t, what training sees.", "",
              "| trajectories | step | t | impossible | KL: possible | KL: impossible |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["steps"]:
        lines.append(f"| {r['arm']} | {r['step']} | {r['t']:.3f} | {r['impossible_share']:.3f} | {kl(r, 'possible')} | {kl(r, 'impossible')} |")
    lines += ["", f"Forward process, KL per masked position averaged over the steps' t: {result['forward_kl_mean']:.3f} nats, a Riemann "
              "sum of ∫ KL dt, which is the model's NELBO − H (MDLM, log-linear schedule)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="an MDLM train run or model folder")
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="16 samples of length 16")
    parser.add_argument("--num-samples", type=int, default=None, help="default 256 (quick: 16)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help="file stem (default: off_support, -quick in quick mode)")
    args = parser.parse_args()
    plan = {**PLANS["quick" if args.quick else "full"], **({"num_samples": args.num_samples} if args.num_samples else {})}
    torch.manual_seed(args.seed)
    result = {"model": args.model, "nfe": args.nfe, "seed": args.seed, **plan, **measure(args.model, args.nfe, seed=args.seed, **plan)}
    result["command"] = (f"python benchmarks/off_support.py --model {args.model} --nfe {args.nfe} --num-samples {plan['num_samples']}"
                         + (" --quick" if args.quick else "") + (f" --name {args.name}" if args.name else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("off_support-quick" if args.quick else "off_support")
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / f"{stem}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
