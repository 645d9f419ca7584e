"""Speed and memory of training steps and samplers, eager and compiled, measured side by side in one run.

    python benchmarks/speed.py            # tiny and small presets
    python benchmarks/speed.py --quick    # tiny only, fewer steps, two of the compiled kinds

Training: tokens/s of an optimiser step with `objective: diffusion`, with `objective:
tokendrift` (the paper's defaults), with TokenDrift's reference queues off, with 0.1's
defaults, and of a diffusion step with torch's default (foreach) AdamW, the reference's, in
place of the fused one: the ratios are TokenDrift's overhead, the queues' own (timed with both
queues full, as in training once queue_size / batch steps have passed) and the fused update's
gain. TokenDrift's frozen encoder alone: the clean batch's pass without gradient, the soft
tokens' pass with the backward to the logits, and the two halves as one pass, each against a
diffusion step. Sampling: tokens/s at NFE 4 and 32. The diffusion and TokenDrift steps and the
samplers are also timed compiled (torch.compile of the denoiser and the encoder, as
`optim.compile` does): compiled / eager per measurement, the compile time (cold: an empty
inductor cache; cached: its later repeats) and the steps that win it back.

Every measurement runs in its own child process with `--threads` torch threads (1 by default),
so each reports its own peak memory (peak RSS on CPU, peak allocated on CUDA), and the kinds
alternate (A B A B ...) so machine noise hits all alike; the median of the repeats is reported,
with the machine's load average before and after. Prints a table, writes <out>/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# size → (vocab, batch, seq_len). `small` is the papers' 12-layer 768-wide model with GPT-2's
# vocabulary, at a reduced batch so it fits a CPU.
SHAPES = {"tiny": (107, 64, 32), "small": (50258, 2, 128)}
KINDS = ["train-diffusion", "train-tokendrift", "train-tokendrift-batch-only", "train-tokendrift-0.1", "train-diffusion-foreach",
         "encoder-clean", "encoder-soft", "encoder-one-pass", "sample-4", "sample-32"]
COMPILED = ["train-diffusion", "train-tokendrift", "sample-4", "sample-32"]  # also timed compiled
# --quick compiles one training step (the denoiser and TokenDrift's encoder) and one sampler:
# cold compiles are most of its time, and the other two compile the same modules again (a
# diffusion step's denoiser; NFE 32 calls NFE 4's compiled denoiser more often).
COMPILED_QUICK = ["train-tokendrift", "sample-4"]
# TokenDrift's settings per kind: the paper's defaults; without reference queues; and the
# closest to the defaults of version 0.1 (every block its own drift set, the drifting code's
# kernel, no queues, the diffusion loss kept).
DRIFT_SETTINGS = {
    "train-tokendrift": {},
    "train-tokendrift-batch-only": {"queue_size": 0},
    "train-tokendrift-0.1": {"queue_size": 0, "features": "layers", "kernel": "drifting-code", "base_loss": True},
}


def measure(kind: str, size: str, steps: int, compiled: bool) -> dict:
    """One measurement in this process: one of KINDS, eager or compiled."""
    import torch
    import torch.nn.functional as F

    from tokendrift_cli.diffusion import make_process
    from tokendrift_cli.drift import TokenDrift, build_encoder, diffusion_objective
    from tokendrift_cli.drift.objective import lift
    from tokendrift_cli.models.compiling import adamw, compile_modules
    from tokendrift_cli.models.dit import DiTConfig, DiTModel, as_denoiser
    from tokendrift_cli.models.loading import default_device
    from tokendrift_cli.spec.diffusion import DiffusionSpec
    from tokendrift_cli.spec.drift import DriftSpec

    torch.manual_seed(0)
    vocab, batch, seq_len = SHAPES[size]
    device = default_device()
    model = DiTModel(DiTConfig.from_size(size, vocab_size=vocab, mask_token_id=vocab - 1, max_position_embeddings=seq_len)).to(device)
    process = make_process("mdlm", DiffusionSpec(), vocab, vocab - 1, False)
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randint(0, vocab - 1, (batch, seq_len), generator=generator, device=device)
    denoiser = as_denoiser(model)
    spec = DriftSpec(**DRIFT_SETTINGS.get(kind, {}))
    encoder = build_encoder(spec, model).to(device) if kind.startswith(("train-tokendrift", "encoder")) else None
    if compiled:
        # A timing asked for compiled that would run eager is refused, not measured under the wrong name.
        compile_modules([model] + ([encoder] if encoder else []), True, device, "compile", lambda why: sys.exit(f"error: {why}"))

    if kind.startswith("train"):
        optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True) if kind == "train-diffusion-foreach"
                     else adamw(model.parameters(), device, lr=1e-4))
        objective = TokenDrift(spec, encoder, device=device) if encoder else diffusion_objective

        def step():
            optimizer.zero_grad(set_to_none=True)
            objective(model, process, x0, generator, lambda loss: loss.backward())
            optimizer.step()

    elif kind.startswith("encoder"):
        assert encoder is not None
        log_probs = process.loss(denoiser, x0, generator).log_probs.detach().requires_grad_()  # one step's prediction

        def step():
            if kind == "encoder-clean":
                with torch.no_grad():
                    encoder(x0)
                return
            soft = lift(log_probs, spec)
            if kind == "encoder-soft":
                h = encoder(soft)
            else:  # the clean batch as one-hot rows beside the soft tokens, through the encoder at once
                h = encoder(torch.cat([F.one_hot(x0, vocab).to(soft.dtype), soft]))[:, batch:]
            torch.autograd.grad(h.sum(), log_probs)

    else:
        nfe = int(kind.split("-")[1])
        model.eval()

        def step():
            process.sample(denoiser, batch, seq_len, nfe, generator, cache=False)

    started = time.perf_counter()
    step()  # warm-up; compiled: the compilation
    first_step = time.perf_counter() - started
    if kind.startswith("train-tokendrift"):
        fill_queues(objective)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "compiled": compiled, "size": size, "device": device.type, "threads": torch.get_num_threads(),
            "tokens_per_s": steps * batch * seq_len / seconds, "step_s": seconds / steps, "first_step_s": first_step,
            "peak_mib": peak, "batch": batch, "seq_len": seq_len, "vocab": vocab, "steps": steps}


def fill_queues(objective) -> None:
    """Both reference queues full, as in training after queue_size / batch steps: a few timed
    steps would otherwise hold only a few batches. The drift field's cost depends on how many
    features the queues hold, not their values, so the warm-up step's are repeated."""
    import torch

    for queue in (objective.real_queue, objective.gen_queue):
        if queue.size and queue.features is not None:
            queue.push(torch.cat([queue.features] * -(-queue.size // len(queue)), dim=-2))


def child(kind: str, size: str, steps: int, compiled: bool, threads: int, cache: Path) -> dict:
    """One measurement in a fresh process; a compiled one keeps its own inductor cache in `cache`
    (empty at its first repeat: a cold compile; filled at the next: a cached one)."""
    command = [sys.executable, __file__, "--one", kind, "--size", size, "--steps", str(steps), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    done = subprocess.run(command + (["--compiled"] if compiled else []), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(done.stderr)
    return json.loads(done.stdout)


def summarise(rows: list[dict], sizes: list[str], compiled: list[str]) -> dict:
    """The ratios speed.json and docs/results.md report, from the table's rows; `compiled`: the
    kinds also timed compiled."""
    speed = {(r["size"], r["kind"], r["compiled"]): r["tokens_per_s"] for r in rows}
    out: dict = {key: {} for key in ("tokendrift_cost_vs", "compiled_vs_eager", "compile_s", "break_even_steps",
                                     "encoder_passes_vs_diffusion", "fused_adamw_vs_foreach")}
    for against in ("train-diffusion", "train-tokendrift-batch-only", "train-tokendrift-0.1"):
        out["tokendrift_cost_vs"][against] = {s: speed[s, against, False] / speed[s, "train-tokendrift", False] for s in sizes}
    if {"train-diffusion", "train-tokendrift"} <= set(compiled):
        out["tokendrift_cost_vs"]["train-diffusion, compiled"] = {
            s: speed[s, "train-diffusion", True] / speed[s, "train-tokendrift", True] for s in sizes}
    for s in sizes:
        out["compiled_vs_eager"][s] = {k: speed[s, k, True] / speed[s, k, False] for k in compiled}
        out["encoder_passes_vs_diffusion"][s] = {
            k[len("encoder-"):]: speed[s, "train-diffusion", False] / speed[s, k, False] for k in KINDS if k.startswith("encoder")}
        out["fused_adamw_vs_foreach"][s] = speed[s, "train-diffusion", False] / speed[s, "train-diffusion-foreach", False]
        out["compile_s"][s], out["break_even_steps"][s] = {}, {}
        for k in compiled:
            row = next(r for r in rows if (r["size"], r["kind"], r["compiled"]) == (s, k, True))
            out["compile_s"][s][k] = {"cold": row["compile_s"], "cached": row["compile_s_cached"]}
            eager_step = next(r for r in rows if (r["size"], r["kind"], r["compiled"]) == (s, k, False))["step_s"]
            saved = eager_step - row["step_s"]  # per step (a sampling row's step is one whole sample)
            out["break_even_steps"][s][k] = row["compile_s"] / saved if saved > 0 else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each measurement (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one, args.size, args.steps, args.compiled)))
        return

    sizes = ["tiny"] if args.quick else ["tiny", "small"]
    steps = {"tiny": 5 if args.quick else 20, "small": 2}
    # A CPU step of the small model takes seconds: it runs once, the tiny one `--repeats` times.
    repeats = {"tiny": 1 if args.quick else args.repeats, "small": 1}
    compiled_kinds = COMPILED_QUICK if args.quick else COMPILED
    measurements = [(kind, False) for kind in KINDS] + [(kind, True) for kind in compiled_kinds]
    load_before, started = os.getloadavg(), time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-inductor-") as caches:
        for size in sizes:
            runs: dict = {m: [] for m in measurements}
            for _ in range(repeats[size]):
                for kind, compiled in measurements:  # interleaved, so drift in machine load hits every kind alike
                    kind_steps = steps[size] if kind.startswith(("train", "encoder")) else max(1, steps[size] // 4)
                    cache = Path(caches, f"{size}-{kind}")
                    runs[kind, compiled].append(child(kind, size, kind_steps, compiled, args.threads, cache))
            for (kind, compiled), done in runs.items():
                compile_s = [r["first_step_s"] - statistics.median(x["step_s"] for x in done) for r in done]
                rows.append({**done[0], "tokens_per_s": statistics.median(r["tokens_per_s"] for r in done),
                             "step_s": statistics.median(r["step_s"] for r in done),
                             "peak_mib": max(r["peak_mib"] for r in done), "repeats": len(done),
                             **({"compile_s": compile_s[0], "compile_s_cached": statistics.median(compile_s[1:]) if len(done) > 1 else None}
                                if compiled else {})})
    command = "python benchmarks/speed.py" + (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads != 1 else "")
    result = {"rows": rows, **summarise(rows, sizes, compiled_kinds), "command": command, "threads": args.threads,
              "load_average": {"before": load_before, "after": os.getloadavg()}, "minutes": (time.time() - started) / 60}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("speed-quick.json" if args.quick else "speed.json")).write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'size':<6} {'measurement':<28} {'':<8} {'tokens/s':>10} {'peak MiB':>9}  (batch × len, vocab)")
    for r in rows:
        print(f"{r['size']:<6} {r['kind']:<28} {'compiled' if r['compiled'] else 'eager':<8} {r['tokens_per_s']:>10.0f} {r['peak_mib']:>9.0f}"
              f"  ({r['batch']} × {r['seq_len']}, {r['vocab']})")
    for size in sizes:
        costs = ", ".join(f"{by_size[size]:.2f}× a {against[len('train-'):]} step" for against, by_size in result["tokendrift_cost_vs"].items())
        print(f"TokenDrift step ({size}) costs {costs}")
        print(f"its encoder passes ({size}), in diffusion steps: " + ", ".join(f"{k} {v:.2f}" for k, v in result["encoder_passes_vs_diffusion"][size].items()))
        print(f"compiled / eager ({size}): " + ", ".join(
            f"{k} {v:.2f}× (compile {result['compile_s'][size][k]['cold']:.0f} s cold, won back after "
            + (f"{result['break_even_steps'][size][k]:.0f} {'samples' if k.startswith('sample') else 'steps'})" if result['break_even_steps'][size][k] else "never)")
            for k, v in result["compiled_vs_eager"][size].items()))
        print(f"fused / foreach AdamW ({size}): {result['fused_adamw_vs_foreach'][size]:.2f}× a diffusion step")
    print(f"{args.threads} thread(s); load average {load_before[0]:.2f} before, {result['load_average']['after'][0]:.2f} after")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
