"""Every command's outputs with fixed seeds, for checking that a refactor changes nothing.

Runs train (MDLM and DUO, diffusion and TokenDrift, from scratch and continued), sample, eval,
probe and marginal-trap on tiny settings, and writes one JSON of what they produced: each
results.json and metrics.jsonl with wall-clock numbers and paths removed, and the samples.

    python benchmarks/behaviour.py --out before.json        # at the old commit
    python benchmarks/behaviour.py --out after.json         # at the new one
    python benchmarks/behaviour.py --compare before.json after.json

Same seeds on the same CPU must give identical files (string hashing is seeded too, so that a
set's order can never reach a number); --compare prints every difference and
exits 1 if there is one. A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

# Keys that measure time: they differ between any two runs. Paths are kept, relative to the work folder.
VOLATILE = ("seconds", "_per_s")
SMALL = ["--set", "data.num_train=256", "--set", "data.num_valid=32", "--set", "data.seq_len=16", "--set", "optim.batch_size=8",
         "--set", "logging.log_every=1", "--set", "logging.eval_every=3", "--set", "logging.valid_sequences=16",
         "--set", "quality.num_samples=16"]


def commands(work: Path) -> dict[str, list[str]]:
    cache = ["--set", f"data.cache_dir={work / 'cache'}"]
    train = ["train", "--init", "none", "--max-steps", "6", "--lr", "1e-3", *SMALL, *cache]
    return {
        "train-mdlm-diffusion": [*train, "--backbone", "mdlm", "--objective", "diffusion"],
        "train-duo-diffusion": [*train, "--backbone", "duo", "--objective", "diffusion"],
        "train-mdlm-tokendrift": ["train", "--init", str(work / "train-mdlm-diffusion"), "--max-steps", "4", "--lr", "1e-3",
                                  "--seed", "1", *SMALL, *cache],
        "train-duo-tokendrift": ["train", "--init", str(work / "train-duo-diffusion"), "--max-steps", "4", "--lr", "1e-3",
                                 "--seed", "1", "--set", "drift.variant=mirror-kl", "--set", "drift.base_loss=true", *SMALL, *cache],
        "sample-mdlm": ["sample", "--model", str(work / "train-mdlm-tokendrift"), "--nfe", "4", "--num-samples", "8", "--seed", "3"],
        "sample-duo": ["sample", "--model", str(work / "train-duo-tokendrift"), "--nfe", "8", "--num-samples", "8", "--seed", "3"],
        "eval": ["eval", "--model", str(work / "train-mdlm-tokendrift"), "--model", str(work / "train-duo-tokendrift"),
                 "--nfe", "4,16", "--num-samples", "16", "--seed", "2"],
        "eval-samples": ["eval", "--samples", str(work / "sample-mdlm" / "samples.jsonl")],
        "probe": ["probe", "--model", str(work / "train-mdlm-tokendrift"), "--num-masks", "8", "--num-prompts", "3"],
        "marginal-trap": ["marginal-trap", "--set", "trap.num_contexts=4", "--seed", "5"],
        "marginal-trap-model": ["marginal-trap", "--mode", "model", "--model", str(work / "train-mdlm-tokendrift"),
                                "--set", "trap.num_contexts=4", "--seed", "5"],
    }


def stable(value, work: Path):
    """`value` without its volatile keys and with paths under `work` written from $WORK, recursively."""
    if isinstance(value, dict):
        return {k: stable(v, work) for k, v in value.items() if not any(mark in k for mark in VOLATILE)}
    if isinstance(value, list):
        return [stable(v, work) for v in value]
    if isinstance(value, str):
        return value.replace(str(work), "$WORK")
    return value


def collect(work: Path) -> dict:
    outputs = {}
    for name, args in commands(work).items():
        out = work / name
        print("$ tokendrift " + " ".join(shlex.quote(a) for a in args), flush=True)
        done = subprocess.run([sys.executable, "-m", "tokendrift_cli", *args, "--out", str(out), "--json", "--quiet"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            sys.exit(f"{name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        record = {"results": stable(json.loads((out / "results.json").read_text()), work)}
        for extra in ("metrics.jsonl", "samples.jsonl"):
            if (out / extra).is_file():
                record[extra] = [stable(json.loads(line), work) for line in (out / extra).read_text().splitlines()]
        outputs[name] = record
    return outputs


def differences(before, after, where: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{where}.{k}: only in one" for k in sorted(set(before) ^ set(after))]
        for key in sorted(set(before) & set(after)):
            found += differences(before[key], after[key], f"{where}.{key}")
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{where}[{i}]")]
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the outputs here (JSON)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        found = differences(before, after)
        print("\n".join(found[:200]) or "identical")
        sys.exit(1 if found else 0)
    if args.out is None:
        parser.error("give --out FILE or --compare BEFORE AFTER")
    with tempfile.TemporaryDirectory() as work:
        outputs = collect(Path(work))
    args.out.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {len(outputs)} commands")


if __name__ == "__main__":
    main()
