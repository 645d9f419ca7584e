"""Speed and memory of training steps and samplers, measured side by side in one run.

    python benchmarks/speed.py            # tiny and small presets
    python benchmarks/speed.py --quick    # tiny only, fewer steps

Training: tokens/s of an optimiser step with `objective: diffusion`, with `objective:
tokendrift` (the paper's defaults) and with TokenDrift's reference queues off, at equal batch:
the ratios are TokenDrift's overhead and the queues' own (timed with both queues full, as in
training once queue_size / batch steps have passed). Sampling: tokens/s at NFE 4
and 32. Every measurement runs in its own child process, so each reports its own peak memory
(peak RSS on CPU, peak allocated on CUDA), and the two objectives alternate (A B A B ...) so
machine noise hits both alike; the median of the repeats is reported. Prints a table, writes
<out>/speed.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# size → (vocab, batch, seq_len). `small` is the papers' 12-layer 768-wide model with GPT-2's
# vocabulary, at a reduced batch so it fits a CPU.
SHAPES = {"tiny": (107, 64, 32), "small": (50258, 2, 128)}
KINDS = ["train-diffusion", "train-tokendrift", "train-tokendrift-batch-only", "train-tokendrift-0.1", "sample-4", "sample-32"]
# TokenDrift's settings per kind: the paper's defaults; without reference queues; and the
# closest to the defaults of version 0.1 (every block its own drift set, the drifting code's
# kernel, no queues, the diffusion loss kept).
DRIFT_SETTINGS = {
    "train-tokendrift": {},
    "train-tokendrift-batch-only": {"queue_size": 0},
    "train-tokendrift-0.1": {"queue_size": 0, "features": "layers", "kernel": "drifting-code", "base_loss": True},
}


def measure(kind: str, size: str, steps: int) -> dict:
    """One measurement in this process: one of KINDS."""
    import torch

    from tokendrift_cli.diffusion import make_process
    from tokendrift_cli.drift import TokenDrift, build_encoder, diffusion_objective
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

    if kind.startswith("train"):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        if kind == "train-diffusion":
            objective = diffusion_objective
        else:
            spec = DriftSpec(**DRIFT_SETTINGS[kind])
            objective = TokenDrift(spec, build_encoder(spec, model).to(device), device=device)

        def step():
            optimizer.zero_grad(set_to_none=True)
            objective(model, process, x0, generator, lambda loss: loss.backward())
            optimizer.step()

        tokens = batch * seq_len
    else:
        nfe = int(kind.split("-")[1])

        def step():
            process.sample(denoiser, batch, seq_len, nfe, generator, cache=False)

        tokens = batch * seq_len
    step()  # warm-up
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
    return {"kind": kind, "size": size, "device": device.type, "tokens_per_s": steps * tokens / seconds, "peak_mib": peak,
            "batch": batch, "seq_len": seq_len, "vocab": vocab, "steps": steps}


def fill_queues(objective) -> None:
    """Both reference queues full, as in training after queue_size / batch steps: a few timed
    steps would otherwise hold only a few batches. The drift field's cost depends on how many
    features the queues hold, not their values, so the warm-up step's are repeated."""
    import torch

    for queue in (objective.real_queue, objective.gen_queue):
        if queue.size and queue.features is not None:
            queue.push(torch.cat([queue.features] * -(-queue.size // len(queue)), dim=-2))


def child(kind: str, size: str, steps: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", kind, "--size", size, "--steps", str(steps)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.size, args.steps)))
        return

    sizes = ["tiny"] if args.quick else ["tiny", "small"]
    steps = {"tiny": 5 if args.quick else 20, "small": 2}
    # A CPU step of the small model takes seconds: it runs once, the tiny one `--repeats` times.
    repeats = {"tiny": 1 if args.quick else args.repeats, "small": 1}
    kinds = KINDS
    rows = []
    for size in sizes:
        runs = {kind: [] for kind in kinds}
        for _ in range(repeats[size]):
            for kind in kinds:  # interleaved, so drift in machine load hits every kind alike
                runs[kind].append(child(kind, size, steps[size] if kind.startswith("train") else max(1, steps[size] // 4)))
        for kind in kinds:
            rows.append({**runs[kind][0], "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs[kind]),
                         "peak_mib": max(r["peak_mib"] for r in runs[kind]), "repeats": len(runs[kind])})
    # Cost of a TokenDrift step against a diffusion step, against one without queues, against 0.1's.
    costs = {against: {} for against in ("train-diffusion", "train-tokendrift-batch-only", "train-tokendrift-0.1")}
    for size in sizes:
        by_kind = {r["kind"]: r["tokens_per_s"] for r in rows if r["size"] == size}
        for against, by_size in costs.items():
            by_size[size] = by_kind[against] / by_kind["train-tokendrift"]
    command = "python benchmarks/speed.py" + (" --quick" if args.quick else "")
    result = {"rows": rows, "tokendrift_cost_vs": costs, "command": command}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("speed-quick.json" if args.quick else "speed.json")).write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'size':<6} {'measurement':<28} {'tokens/s':>10} {'peak MiB':>9}  (batch × len, vocab)")
    for r in rows:
        print(f"{r['size']:<6} {r['kind']:<28} {r['tokens_per_s']:>10.0f} {r['peak_mib']:>9.0f}  ({r['batch']} × {r['seq_len']}, {r['vocab']})")
    for size in sizes:
        print(f"TokenDrift step ({size}) costs " + ", ".join(f"{by_size[size]:.2f}× a {against[len('train-'):]} step" for against, by_size in costs.items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
