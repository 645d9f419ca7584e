"""TokenDrift's Tables 1–2 and Figure 2 on the built-in synthetic language, judged exactly.

For each backbone (MDLM, DUO):
1. pretrain a tiny model with the diffusion loss: our "released checkpoint" (`init`);
2. learning-rate sweep: short continuations of the baseline arm at each rate, plus TokenDrift at
   each rate for the record; the rate with the baseline's best NFE-4 Gen.-PPL is used for both
   arms (the paper's 3e-5 was chosen for a 170M model, not for this one);
3. the matched continuation (objective diffusion) and TokenDrift (the paper's defaults) over
   three seeds, judged at NFE 4, 8, 16, 32 with the exact oracle beside the floor (the language's
   own samples); every checkpoint judged at NFE 4 and 16 (Figure 2), to show both arms have
   stopped moving.

    python benchmarks/reproduce.py            # full run: about 1.5 hours on an idle 2-core CPU, one thread per command
    python benchmarks/reproduce.py --quick    # a few minutes, for smoke tests
    python benchmarks/reproduce.py --backbones duo & python benchmarks/reproduce.py --backbones mdlm   # one per core
    python benchmarks/reproduce.py --init-study --variant micro-steps --set optim.grad_accum=8 --set drift.queue_size=128
        # TokenDrift under other settings: only its arm is trained again, into reproduce-converged-micro-steps.*

Every step is a `tokendrift` command, printed as it runs. A step whose output folder holds a
`results.json` is not run again, so an interrupted run continues where it stopped; after each
stage <out>/reproduce.json, reproduce.md and the PNG plots are rewritten with what is done.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tokendrift_cli.metrics.uncertainty import mean_sd
from tokendrift_cli.runs import atomic_write_text

# The NFE sweep stops at the sequence length: a sampler makes at most one call per position.
PLANS = {
    "full": dict(pretrain_steps=3000, pretrain_lr=3e-4, pretrain_warmup=50, sweep_steps=500, continue_steps=1000, checkpoint_every=100, num_samples=256,
                 batch_size=64, seq_len=32, lrs=[3e-5, 1e-4, 3e-4], seeds=[0, 1, 2], nfes=[4, 8, 16, 32]),
    "quick": dict(pretrain_steps=30, pretrain_lr=3e-4, pretrain_warmup=5, sweep_steps=4, continue_steps=10, checkpoint_every=5, num_samples=16,
                  batch_size=8, seq_len=16, lrs=[1e-3], seeds=[0, 1], nfes=[4, 8, 16]),
}
DYNAMICS_NFES = [4, 16]
BACKBONES = ["mdlm", "duo"]
ARMS = ["exact", "init", "baseline", "tokendrift"]  # exact: the language's exact denoiser with the same sampler
OBJECTIVE = {"baseline": "diffusion", "tokendrift": "tokendrift"}


def tokendrift(*args: str, out: Path, fresh: bool = True) -> dict:
    """Run one `tokendrift` command into `out`, or read its result if it finished before.
    fresh=False runs it whatever `out` holds (a `train --resume` that continues it)."""
    if fresh and (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    if fresh and out.exists():  # interrupted: start that step again
        shutil.rmtree(out)
    print("$ tokendrift " + " ".join(shlex.quote(a) for a in [*args, "--out", str(out)]), flush=True)
    done = subprocess.run([sys.executable, "-m", "tokendrift_cli", *args, "--out", str(out), "--json", "--quiet"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return json.loads(done.stdout)


class Study:
    def __init__(self, plan: dict, work: Path, extra: list[str], variant: str = ""):
        # A variant is TokenDrift under other settings (`extra`). Only the folders that hold TokenDrift's
        # output carry its name: the exact denoiser, the init and the baseline runs are the defaults' study's.
        self.plan, self.work, self.extra, self.variant = plan, work, extra, variant

    def named(self, folder: str) -> str:
        """`folder` for this variant's TokenDrift output."""
        return f"{folder}-{self.variant}" if self.variant else folder

    def common(self, backbone: str, seed: int) -> list[str]:
        return ["--backbone", backbone, "--seed", str(seed), "--batch-size", str(self.plan["batch_size"]),
                "--set", f"data.seq_len={self.plan['seq_len']}", "--set", "logging.eval_every=0", "--set", "quality.num_samples=0"]

    def pretrain(self, backbone: str) -> Path:
        out = self.work / f"{backbone}-init"
        # From scratch, so at a from-scratch rate (train's defaults are for continual training);
        # a plan may give each backbone its own recipe (--init-study).
        recipe = {**self.plan, **self.plan.get("init_recipes", {}).get(backbone, {})}
        measured = Path(recipe["checkpoint"]) if "checkpoint" in recipe else None
        if measured is not None and (measured / "config.json").is_file():
            # The init study's own checkpoint, the very model it measured, rather than a retrained twin.
            if not (out / "copied_from.txt").is_file():
                copying = out.with_name(out.name + ".tmp")
                shutil.rmtree(copying, ignore_errors=True)
                shutil.copytree(measured, copying / "model")
                (copying / "copied_from.txt").write_text(f"{measured}\n")
                shutil.rmtree(out, ignore_errors=True)
                copying.rename(out)
            return out
        tokendrift("train", *self.common(backbone, 0), "--objective", "diffusion", "--init", "none",
                   "--max-steps", str(recipe["pretrain_steps"]), "--lr", str(recipe["pretrain_lr"]),
                   "--set", f"optim.warmup_steps={recipe['pretrain_warmup']}",
                   "--set", f"model.size={recipe.get('pretrain_size', 'tiny')}", out=out)
        return out

    def continue_(self, backbone: str, arm: str, lr: float, seed: int, steps: int, name: str) -> Path:
        out = self.work / (self.named(name) if arm == "tokendrift" else name)
        extra = self.extra if arm == "tokendrift" else []
        tokendrift(
            "train", *self.common(backbone, seed), "--init", str(self.work / f"{backbone}-init"),
            "--objective", OBJECTIVE[arm], "--max-steps", str(steps), "--lr", str(lr),
            "--set", f"logging.save_every={self.plan['checkpoint_every']}", "--set", "logging.keep_checkpoints=1000",
            "--set", "optim.warmup_steps=0", *extra, out=out,
        )
        return out

    def judge(self, models: list[Path | str], nfes: list[int], seed: int, out: Path) -> dict:
        # At the plan's length: the exact denoiser has none of its own (a trained model's is the plan's).
        return tokendrift(
            "eval", *[a for m in models for a in ("--model", str(m))], "--nfe", ",".join(map(str, nfes)),
            "--genppl-model", "oracle", "--num-samples", str(self.plan["num_samples"]), "--seed", str(seed),
            "--set", f"sampling.seq_len={self.plan['seq_len']}", out=out,
        )

    def sweep(self, backbone: str) -> tuple[list[dict], float]:
        """Both arms at every rate (seed 0); the baseline's best NFE-4 Gen.-PPL picks the rate."""
        rows = []
        for lr in self.plan["lrs"]:
            for arm in ("baseline", "tokendrift"):
                run = self.continue_(backbone, arm, lr, 0, self.plan["sweep_steps"], f"{backbone}-sweep-lr{lr:g}-{arm}")
                judged = self.judge([run], DYNAMICS_NFES, 0, run.with_name(run.name + "-eval"))
                rows += [{"backbone": backbone, "lr": lr, "arm": arm, "nfe": r["nfe"], "gen_ppl": r["gen_ppl"],
                          "entropy": r["entropy"]} for r in judged["rows"]]
        baseline_at_4 = {r["lr"]: r["gen_ppl"] for r in rows if r["arm"] == "baseline" and r["nfe"] == 4}
        return rows, min(baseline_at_4, key=baseline_at_4.get)

    def exact_runs(self, backbone: str) -> list[dict]:
        """The exact denoiser (`exact:<backbone>`) judged as the arms are, per seed: what a perfect
        likelihood-trained model reaches with this sampler (model error is measured against it)."""
        rows = []
        for seed in self.plan["seeds"]:
            judged = self.judge([f"exact:{backbone}"], self.plan["nfes"], seed, self.work / f"{backbone}-exact-seed{seed}")
            rows += [{"backbone": backbone, "arm": "exact", "seed": seed, **_metrics(r)} for r in judged["rows"]]
        return rows

    def main_runs(self, backbone: str, lr: float) -> tuple[list[dict], list[dict], dict]:
        """Per seed: init judged with that sampling seed, both continuations; every checkpoint at NFE 4 and 16."""
        per_seed, dynamics, floor = [], [], None
        for seed in self.plan["seeds"]:
            runs = {"init": self.work / f"{backbone}-init"}
            for arm in ("baseline", "tokendrift"):
                runs[arm] = self.continue_(backbone, arm, lr, seed, self.plan["continue_steps"], f"{backbone}-{arm}-seed{seed}")
            judged = self.judge(list(runs.values()), self.plan["nfes"], seed, self.work / self.named(f"{backbone}-eval-seed{seed}"))
            floor = floor or judged["floor"]
            arm_of = {str(path): arm for arm, path in runs.items()}
            per_seed += [{"backbone": backbone, "arm": arm_of[r["source"]], "seed": seed, **_metrics(r)} for r in judged["rows"]]
            checkpoints = {str(c / "model"): (arm, int(c.name.split("-")[1]))
                           for arm in ("baseline", "tokendrift") for c in (runs[arm] / "checkpoints").glob("checkpoint-*")}
            scored = self.judge([Path(c) for c in checkpoints], DYNAMICS_NFES, seed, self.work / self.named(f"{backbone}-dynamics-seed{seed}"))
            dynamics += [{"backbone": backbone, "arm": checkpoints[r["source"]][0], "seed": seed, "step": checkpoints[r["source"]][1],
                          "nfe": r["nfe"], "gen_ppl": r["gen_ppl"], "entropy": r["entropy"]} for r in scored["rows"]]
            dynamics += [{"backbone": backbone, "arm": arm, "seed": seed, "step": 0, "nfe": r["nfe"], "gen_ppl": r["gen_ppl"],
                          "entropy": r["entropy"]} for r in per_seed if r["seed"] == seed and r["arm"] == "init"
                         and r["nfe"] in DYNAMICS_NFES for arm in ("baseline", "tokendrift")]
        return per_seed, dynamics, floor


def _metrics(row: dict) -> dict:
    return {"nfe": row["nfe"], "gen_ppl": row["gen_ppl"], "entropy": row["entropy"], "acceptance": row["acceptance"],
            "ngram_jsd": row["ngram_jsd"], "model_error": row["model_error"]}


def with_model_error(per_seed: list[dict]) -> list[dict]:
    """Rows judged before eval reported it get model error against the exact rows of their seed."""
    exact = {(r["backbone"], r["seed"], r["nfe"]): r["gen_ppl"] for r in per_seed if r["arm"] == "exact"}
    return [{**r, "model_error": math.log(r["gen_ppl"] / exact[key])} if "model_error" not in r and key in exact else r
            for r, key in ((r, (r["backbone"], r["seed"], r["nfe"])) for r in per_seed)]


def summarise(per_seed: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds per (backbone, arm, NFE), as `eval` pools
    runs that differ only in seed (the SD is None while a single seed is done)."""
    rows = []
    for key in dict.fromkeys((r["backbone"], r["arm"], r["nfe"]) for r in per_seed):
        runs = [r for r in per_seed if (r["backbone"], r["arm"], r["nfe"]) == key]
        rows.append({"backbone": key[0], "arm": key[1], "nfe": key[2], "seeds": len(runs),
                     **mean_sd(runs, ("gen_ppl", "entropy", "acceptance", "ngram_jsd", "model_error"))})
    return rows


def reductions(per_seed: list[dict]) -> list[dict]:
    """TokenDrift against the matched baseline of the same seed (same data order and noise)."""
    out = []
    for backbone, nfe in dict.fromkeys((r["backbone"], r["nfe"]) for r in per_seed):
        by_arm = {arm: {r["seed"]: r["gen_ppl"] for r in per_seed if (r["backbone"], r["arm"], r["nfe"]) == (backbone, arm, nfe)}
                  for arm in ("baseline", "tokendrift")}
        paired = [1 - by_arm["tokendrift"][s] / by_arm["baseline"][s] for s in by_arm["baseline"] if s in by_arm["tokendrift"]]
        if paired:
            out.append({"backbone": backbone, "nfe": nfe, "reduction": statistics.mean(paired),
                        "reduction_sd": statistics.stdev(paired) if len(paired) > 1 else 0.0, "seeds": len(paired)})
    return out


def markdown(result: dict) -> str:
    lines = ["Gen.-PPL (oracle) and sample entropy, mean ± SD over seeds; acceptance is the share of samples the grammar produces.", ""]
    nfes = result["plan"]["nfes"]
    lines += ["| backbone | arm | " + " | ".join(f"NFE {n}: Gen.-PPL | entropy | acc." for n in nfes) + " |",
              "|---|---|" + "---:|---:|---:|" * len(nfes)]
    rows = result["rows"]
    for backbone, arm in dict.fromkeys((r["backbone"], r["arm"]) for r in rows):
        cells = []
        for n in nfes:
            r = next((r for r in rows if (r["backbone"], r["arm"], r["nfe"]) == (backbone, arm, n)), None)
            spread = f" ± {r['gen_ppl_sd']:.1f}" if r and r["gen_ppl_sd"] is not None else ""
            cells += [f"{r['gen_ppl']:.1f}{spread}", f"{r['entropy']:.3f}", f"{r['acceptance']:.3f}"] if r else ["", "", ""]
        lines.append(f"| {backbone} | {arm} | " + " | ".join(cells) + " |")
    lines.append("")
    if any("model_error" in r for r in rows):
        lines += ["Model error ln(arm / exact denoiser), nats per token, mean ± SD over seeds (negative: better than any "
                  "likelihood-trained model with this sampler); the exact row's factorization error is ln(exact / floor).", "",
                  "| backbone | arm | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---:|" * len(nfes)]
        for backbone, arm in dict.fromkeys((r["backbone"], r["arm"]) for r in rows):
            cells = []
            for n in nfes:
                r = next((r for r in rows if (r["backbone"], r["arm"], r["nfe"]) == (backbone, arm, n)), None)
                if r is not None and arm == "exact":
                    cells.append(f"fact. {math.log(r['gen_ppl'] / result['floor_exact']):+.3f}" if result.get("floor_exact") else "")
                else:
                    spread = f" ± {r['model_error_sd']:.3f}" if r is not None and r.get("model_error_sd") is not None else ""
                    cells.append(f"{r['model_error']:+.3f}{spread}" if r is not None and "model_error" in r else "")
            lines.append(f"| {backbone} | {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    for backbone, floor in result["floor"].items():
        lines.append(f"Floor ({backbone}): the language's own samples score Gen.-PPL {floor['gen_ppl']:.3f} (exact "
                     f"{floor['exact_gen_ppl']:.3f}), sample entropy {floor['entropy']:.3f}.")
    if result["reductions"]:
        lines += ["", "| backbone | NFE | Gen.-PPL reduction against the matched baseline (paired by seed) |", "|---|---:|---:|"]
        lines += [f"| {r['backbone']} | {r['nfe']} | {100 * r['reduction']:.1f} ± {100 * r['reduction_sd']:.1f} % |" for r in result["reductions"]]
    if result["sweep"]:
        lines += ["", "Learning-rate sweep (seed 0, " + f"{result['plan']['sweep_steps']} steps); the baseline's best NFE-4 rate is used:", "",
                  "| backbone | lr | arm | NFE 4 | NFE 16 |", "|---|---:|---|---:|---:|"]
        for backbone, lr, arm in dict.fromkeys((r["backbone"], r["lr"], r["arm"]) for r in result["sweep"]):
            at = {r["nfe"]: r["gen_ppl"] for r in result["sweep"] if (r["backbone"], r["lr"], r["arm"]) == (backbone, lr, arm)}
            chosen = " (chosen)" if result["lr"].get(backbone) == lr and arm == "baseline" else ""
            lines.append(f"| {backbone} | {lr:g}{chosen} | {arm} | {at[4]:.1f} | {at[16]:.1f} |")
    if result["dynamics"]:
        lines += ["", "Has each arm stopped moving? Mean NFE-4 Gen.-PPL over seeds at the last three checkpoints:", ""]
        for backbone, arm in dict.fromkeys((d["backbone"], d["arm"]) for d in result["dynamics"]):
            curve = _curve(result["dynamics"], backbone, arm, 4)
            lines.append(f"- {backbone} {arm}: " + ", ".join(f"step {s}: {v:.1f}" for s, v in curve[-3:]))
    return "\n".join(lines) + "\n"


def _curve(dynamics: list[dict], backbone: str, arm: str, nfe: int) -> list[tuple[int, float]]:
    mine = [d for d in dynamics if (d["backbone"], d["arm"], d["nfe"]) == (backbone, arm, nfe)]
    steps = sorted({d["step"] for d in mine})
    return [(s, statistics.mean(d["gen_ppl"] for d in mine if d["step"] == s)) for s in steps]


def plots(result: dict, out: Path, suffix: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from tokendrift_cli.plots import subplots

    rows, dynamics = result["rows"], result["dynamics"]
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    if not backbones:
        return
    fig, axes = subplots(ncols=len(backbones))
    for ax, backbone in zip(axes[0], backbones):
        for arm in ARMS:
            mine = [r for r in rows if r["backbone"] == backbone and r["arm"] == arm]
            style = dict(color="black", linestyle="--", marker="x", label="exact denoiser") if arm == "exact" else dict(marker="o", label=arm)
            ax.errorbar([r["nfe"] for r in mine], [r["gen_ppl"] for r in mine], yerr=[r["gen_ppl_sd"] or 0.0 for r in mine], **style)
        if result.get("floor_exact"):
            ax.axhline(result["floor_exact"], color="grey", linestyle=":", label="floor (the language)")
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="oracle Gen.-PPL", title=backbone.upper())
        nfes = sorted({r["nfe"] for r in rows})
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.xaxis.set_minor_formatter(NullFormatter())  # the NFE labels only, not the log axis' 2x10^1
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"genppl_vs_nfe{suffix}.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, axes = subplots(ncols=len(backbones))
    for ax, backbone in zip(axes[0], backbones):
        for arm, color in (("baseline", "tab:orange"), ("tokendrift", "tab:green")):
            for nfe, style in zip(DYNAMICS_NFES, ("-", "--")):
                curve = _curve(dynamics, backbone, arm, nfe)
                ax.plot([s for s, _ in curve], [v for _, v in curve], style, color=color, marker="o", markersize=3, label=f"{arm}, NFE {nfe}")
        ax.set(yscale="log", xlabel="continuation step", ylabel="oracle Gen.-PPL (mean over seeds)", title=backbone.upper())
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"genppl_vs_step{suffix}.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def init_recipes(out: Path, quick: bool) -> dict:
    """Per backbone, the pretraining recipe of the init benchmarks/init_study.py (run into `out`)
    chose, and where that study kept the checkpoint (reused when it is still there)."""
    from init_study import checkpoint_model, choose, locations

    study_file, study_work = locations(out, quick)
    if not study_file.is_file():
        sys.exit(f"--init-study: {study_file} not found; run benchmarks/init_study.py first")
    study = json.loads(study_file.read_text())
    recipes = {}
    for backbone, exact in study["exact"].items():
        rows = [r for r in study["rows"] if r["backbone"] == backbone]
        if rows:
            choice = choose(rows, exact)
            recipes[backbone] = {"pretrain_steps": choice["steps"], "pretrain_size": choice["size"],
                                 "pretrain_lr": study["plan"]["lr"], "pretrain_warmup": study["plan"]["warmup"],
                                 "checkpoint": str(checkpoint_model(study_work, backbone, choice["size"], choice["steps"]))}
    return recipes


def publish(result: dict, out: Path, suffix: str, backbones: list[str]) -> None:
    """reproduce.json, reproduce.md and the plots, from the per-seed rows so far. Another process
    may be running the other backbones into the same files (one per core): their rows are kept."""
    report = out / f"reproduce{suffix}.json"
    if report.is_file():
        theirs = json.loads(report.read_text())
        for key in ("per_seed", "dynamics", "sweep"):
            result[key] = [r for r in result[key] if r["backbone"] in backbones] + [r for r in theirs[key] if r["backbone"] not in backbones]
        for key in ("lr", "floor"):
            result[key] = {**{b: v for b, v in theirs[key].items() if b not in backbones}, **result[key]}
    result["per_seed"].sort(key=lambda r: (BACKBONES.index(r["backbone"]), ARMS.index(r["arm"])))  # stable: seeds stay in order
    result.update(rows=summarise(result["per_seed"]), reductions=reductions(result["per_seed"]))
    atomic_write_text(report, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / f"reproduce{suffix}.md", markdown(result))
    plots(result, out, suffix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of hours")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: <out>/runs-<mode>)")
    parser.add_argument("--backbones", default="mdlm,duo")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for the TokenDrift arm (needs --variant)")
    parser.add_argument("--variant", default="", help="name of the TokenDrift setting --set gives: its runs and "
                        "reproduce-<mode>-<variant>.* sit beside the defaults' study, sharing its init and baseline runs")
    parser.add_argument("--init-study", action="store_true",
                        help="pretrain each backbone's init with the recipe benchmarks/init_study.py chose (closest to the "
                        "exact denoiser); results go to reproduce-converged.*")
    parser.add_argument("--exact-only", action="store_true",
                        help="add the exact denoiser's rows (and model error) to the study in <out>, running nothing else")
    args = parser.parse_args()
    if args.extra and not args.variant:
        parser.error("--set changes the TokenDrift arm: name that setting with --variant, or it would overwrite the defaults' study")
    if args.variant and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.variant):
        parser.error(f"--variant {args.variant!r}: use lower-case letters, digits and '-' (it names folders and files)")
    mode = "quick" if args.quick else "converged" if args.init_study else "full"
    plan = PLANS["quick" if args.quick else "full"]
    if args.init_study:
        plan = {**plan, "init_recipes": init_recipes(args.out, args.quick)}
    args.out.mkdir(parents=True, exist_ok=True)
    study = Study(plan, args.work or args.out / f"runs-{mode}", [a for item in args.extra for a in ("--set", item)], args.variant)
    suffix = ("" if mode == "full" else f"-{mode}") + (f"-{args.variant}" if args.variant else "")
    started = time.perf_counter()
    which = (" --quick" if args.quick else "") + (" --init-study" if args.init_study else "") + (f" --variant {args.variant}" if args.variant else "")
    result = {"rows": [], "per_seed": [], "reductions": [], "floor": {}, "dynamics": [], "sweep": [], "lr": {},
              "plan": {**plan, "mode": mode, "tokendrift_overrides": args.extra, "variant": args.variant},
              "command": "python benchmarks/reproduce.py" + which + "".join(f" --set {e}" for e in args.extra)}
    from tokendrift_cli.data.synthetic import SyntheticLanguage

    floor_exact = math.exp(SyntheticLanguage().entropy(plan["seq_len"]))
    backbones = args.backbones.split(",")
    if args.exact_only:  # the committed study, re-read against the exact denoiser
        result = json.loads((args.out / f"reproduce{suffix}.json").read_text())
        result["plan"] = {**plan, **result["plan"]}  # a study run before a plan key existed ran at its value then
        # The exact rows are judged anew, so every arm's model error is measured against them again.
        arms = [{k: v for k, v in r.items() if k != "model_error"} for r in result["per_seed"] if r["arm"] != "exact"]
        result["per_seed"] = [row for backbone in backbones for row in study.exact_runs(backbone)] + arms  # a full run's order
        result.update(floor_exact=floor_exact, per_seed=with_model_error(result["per_seed"]),
                      exact_command="python benchmarks/reproduce.py --exact-only" + which)
        publish(result, args.out, suffix, backbones)
        print(markdown(result))
        return
    result["floor_exact"] = floor_exact

    def write(stage: str) -> None:
        result.update(stage=stage, seconds=time.perf_counter() - started)
        publish(result, args.out, suffix, backbones)
        print(f"[{result['seconds']:.0f} s] {stage}", flush=True)

    for backbone in backbones:
        result["per_seed"] += study.exact_runs(backbone)
        write(f"{backbone}: exact denoiser judged")
    for backbone in backbones:
        study.pretrain(backbone)
        sweep, result["lr"][backbone] = study.sweep(backbone)
        result["sweep"] += sweep
        write(f"{backbone}: pretrained, lr {result['lr'][backbone]:g} chosen")
    for backbone in backbones:
        per_seed, dynamics, result["floor"][backbone] = study.main_runs(backbone, result["lr"][backbone])
        result["per_seed"] += per_seed
        result["dynamics"] += dynamics
        write(f"{backbone}: {len(plan['seeds'])} seeds done")
    write("complete")
    print(markdown(result))


if __name__ == "__main__":
    main()
