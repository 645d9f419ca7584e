"""Speed and memory of training steps and samplers, measured side by side in one run.

    python benchmarks/speed.py            # tiny and small presets
    python benchmarks/speed.py --quick    # tiny only, fewer steps

Training: tokens/s of an optimiser step with `objective: diffusion` and with `objective:
tokendrift` at equal batch (their ratio is TokenDrift's overhead). Sampling: tokens/s at NFE 4
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


def measure(kind: str, size: str, steps: int) -> dict:
    """One measurement in this process: 'train-diffusion', 'train-tokendrift', 'sample-4', 'sample-32'."""
    import torch

    from tokendrift_cli.diffusion import make_process
    from tokendrift_cli.drift import build_encoder, drift_loss
    from tokendrift_cli.models.dit import DiTConfig, DiTModel, as_denoiser
    from tokendrift_cli.spec.diffusion import DiffusionSpec
    from tokendrift_cli.spec.drift import DriftSpec

    torch.manual_seed(0)
    vocab, batch, seq_len = SHAPES[size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = DiTModel(DiTConfig.from_size(size, vocab_size=vocab, mask_token_id=vocab - 1, max_position_embeddings=seq_len)).to(device)
    process = make_process("mdlm", DiffusionSpec(), vocab, vocab - 1, False)
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randint(0, vocab - 1, (batch, seq_len), generator=generator, device=device)
    denoiser = as_denoiser(model)

    if kind.startswith("train"):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        drift_spec = DriftSpec()
        encoder = build_encoder(drift_spec, model).to(device) if kind == "train-tokendrift" else None

        def step():
            out = process.loss(denoiser, x0, generator)
            loss = out.loss
            if encoder is not None:
                loss = loss + drift_loss(out.log_probs, x0, encoder, drift_spec)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        tokens = batch * seq_len
    else:
        nfe = int(kind.split("-")[1])

        def step():
            process.sample(denoiser, batch, seq_len, nfe, generator, cache=False)

        tokens = batch * seq_len
    step()  # warm-up
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
    kinds = ["train-diffusion", "train-tokendrift", "sample-4", "sample-32"]
    rows = []
    for size in sizes:
        runs = {kind: [] for kind in kinds}
        for _ in range(repeats[size]):
            for kind in kinds:  # interleaved, so drift in machine load hits every kind alike
                runs[kind].append(child(kind, size, steps[size] if kind.startswith("train") else max(1, steps[size] // 4)))
        for kind in kinds:
            rows.append({**runs[kind][0], "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs[kind]),
                         "peak_mib": max(r["peak_mib"] for r in runs[kind]), "repeats": len(runs[kind])})
    ratios = {}
    for size in sizes:
        by_kind = {r["kind"]: r for r in rows if r["size"] == size}
        ratios[size] = by_kind["train-diffusion"]["tokens_per_s"] / by_kind["train-tokendrift"]["tokens_per_s"]
    command = "python benchmarks/speed.py" + (" --quick" if args.quick else "")
    result = {"rows": rows, "tokendrift_overhead": ratios, "command": command}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("speed-quick.json" if args.quick else "speed.json")).write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'size':<6} {'measurement':<18} {'tokens/s':>10} {'peak MiB':>9}  (batch × len, vocab)")
    for r in rows:
        print(f"{r['size']:<6} {r['kind']:<18} {r['tokens_per_s']:>10.0f} {r['peak_mib']:>9.0f}  ({r['batch']} × {r['seq_len']}, {r['vocab']})")
    for size, ratio in ratios.items():
        print(f"TokenDrift step costs {ratio:.2f}× a diffusion step ({size})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
