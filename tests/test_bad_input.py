"""Bad input over every subcommand: each case exits 2 (bad usage or input) or 1 (the job failed)
with one `error:` line naming the field, file or line at fault, never a traceback, and --json
leaves stdout empty. Most cases run in-process; a few run as real processes, end to end."""

import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys

import pytest

# Text with a Latin-1 "é" (0xe9): not UTF-8.
NOT_UTF8 = b'{"text": "I like tennis .", "prompt": "I like"}\n{"text": "caf\xe9", "prompt": "caf\xe9"}\n'
# A train run that reaches its job must not build the default 20 000-sequence dataset.
SMALL = "--set data.num_train=64 --set data.num_valid=8 --set optim.batch_size=8 --set data.cache_dir={cache}"


@pytest.fixture(scope="module")
def paths(tmp_path_factory, trained_run, interrupted_run):
    root = tmp_path_factory.mktemp("bad")

    def write(name: str, content: str | bytes) -> str:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def model_copy(name: str, damage) -> str:
        folder = root / name
        shutil.copytree(trained_run / "model", folder)
        damage(folder)
        return str(folder)

    def truncate(folder):
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])

    (root / "empty").mkdir()
    bad_run = root / "bad-run"  # a train run whose recorded spec no longer validates
    shutil.copytree(trained_run / "model", bad_run / "model")
    (bad_run / "spec.yaml").write_text("command: train\ndiffusion:\n  eps: 5\n")
    (root / "folder").mkdir()
    (root / "dir.txt").mkdir()
    trunc_run = root / "trunc-run"  # an interrupted run whose checkpoint's weights a crash cut short
    shutil.copytree(interrupted_run, trunc_run)
    truncate(trunc_run / "checkpoints" / "checkpoint-2")
    os.mkfifo(root / "fifo")
    (root / "dangling").symlink_to(root / "missing")
    (root / "loop").symlink_to(root / "loop")
    (root / "folder" / "x.txt").write_text("I like tennis .\n")
    return {
        "run": str(trained_run), "interrupted": str(interrupted_run), "tok": str(trained_run / "model"),
        "runs": str(trained_run.parent), "trunc_run": str(trunc_run), "fifo": str(root / "fifo"),
        "dangling": str(root / "dangling"), "loop": str(root / "loop"),
        "cache": str(root / "cache"), "empty": str(root / "empty"), "folder": str(root / "folder"), "root": str(root),
        "bad_run": str(bad_run),
        "bad_yaml": write("spec.yaml", b"seed: 1\n# caf\xe9\n"),
        "yaml_syntax": write("syntax.yaml", "seed: 1\noptim: [1\n"),
        "yaml_list": write("list.yaml", "- seed: 1\n"),
        "bad_txt": write("docs.txt", b"I like tennis .\ncaf\xe9\n"),
        "bad_jsonl": write("rows.jsonl", NOT_UTF8),
        "bad_json": write("joint.json", b'{"caf\xe9 x": 1.0}'),
        "samples": write("samples.jsonl", '{"text": "I like tennis ."}\n{"text": "he likes tennis ."}\n'),
        "empty_text": write("empty_text.jsonl", '{"text": "I like tennis ."}\n{"text": ""}\n'),
        "blank_text": write("blank_text.jsonl", '{"text": "   "}\n'),
        "big_id": write("big_id.jsonl", '{"text": "I like", "ids": [5, 999999]}\n'),
        "neg_id": write("neg_id.jsonl", '{"text": "I like", "ids": [5, -1]}\n'),
        "bool_id": write("bool_id.jsonl", '{"text": "I like", "ids": [true, 1]}\n'),
        "ragged": write("ragged.jsonl", '{"text": "I like", "ids": [5, 6]}\n{"text": "I", "ids": [5]}\n'),
        "uneven": write("uneven.jsonl", '{"text": "I like ."}\n{"text": "he likes tennis ."}\n'),
        "nan_joint": write("nan.json", '{"I like": NaN, "he likes": 1.0}'),
        "inf_joint": write("inf.json", '{"I like": Infinity, "he likes": 0}'),
        "dup_joint": write("dup.json", '{"I like": 0.5, "I  like": 0.5, "he likes": 0.5}'),
        "joint": write("ok.json", '{"I like": 0.5, "he likes": 0.5}'),
        "twice_joint": write("twice.json", '{"I like": 0.5, "he likes": 0.25, "I like": 0.25}'),
        "twice_yaml": write("twice.yaml", "optim:\n  lr: 0.1\nseed: 1\noptim:\n  max_steps: 3\n"),
        "twice_json": write("twice-spec.json", '{"seed": 1, "optim": {"lr": 0.1, "lr": 0.2}}'),
        "deep_yaml": write("deep.yaml", "[" * 5000 + "]" * 5000),
        "deep_json": write("deep.json", '{"a": ' * 5000 + "1" + "}" * 5000),
        "empty_prompt": write("empty_prompt.jsonl", '{"prompt": "I like"}\n{"prompt": "  "}\n'),
        "file": write("a-file", "x"),
        "long_prompt": " ".join(["the"] * 30),
        "trunc": model_copy("truncated", truncate),
        "bad_config": model_copy("bad-config", lambda f: (f / "config.json").write_text("{not json")),
    }


def _missing_tracker() -> str:
    missing = [name for name, module in (("wandb", "wandb"), ("tensorboard", "tensorboard")) if importlib.util.find_spec(module) is None]
    return missing[0] if missing else ""


# (id, arguments, exit code, fragment of the one error line). {name} is filled from `paths`;
# every case gets --json and, unless it names its own folder, a fresh --out.
CASES = [
    # 1. Non-UTF-8 bytes in every kind of input file (spec on every subcommand).
    *[(f"utf8-spec-{c}", f"{c} --spec {{bad_yaml}}", 2, "spec.yaml:2: not UTF-8 text (byte 0xe9)")
      for c in ("train", "sample", "eval", "probe", "marginal-trap")],
    ("utf8-data-txt", "train --init none --set data.source={bad_txt} --set data.tokenizer={tok} " + SMALL, 2, "docs.txt:2: not UTF-8"),
    ("utf8-data-jsonl", "train --init none --set data.source={bad_jsonl} --set data.tokenizer={tok} " + SMALL, 2, "rows.jsonl:2: not UTF-8"),
    ("utf8-samples", "eval --samples {bad_jsonl}", 2, "rows.jsonl:2: not UTF-8"),
    ("utf8-prompts", "probe --prompts {bad_jsonl} --model {run}", 2, "rows.jsonl:2: not UTF-8"),
    ("utf8-lima", "probe --from-lima {bad_jsonl} --model {run}", 2, "rows.jsonl:2: not UTF-8"),
    ("utf8-joint", "marginal-trap --joint {bad_json}", 2, "joint.json:1: not UTF-8"),
    ("utf8-reference", "eval --samples {samples} --set evaluation.reference={bad_txt}", 2, "docs.txt:2: not UTF-8"),
    # 1. Rich markup in a user path or key is printed as is.
    ("markup-spec", "train --spec {root}/[/oops].yaml", 2, "[/oops].yaml: file not found"),
    ("markup-samples", "eval --samples {root}/[bold]s.jsonl", 2, "[bold]s.jsonl: file not found"),
    ("markup-key", "sample --set [/x]=1", 2, "[/x]: unknown field"),
    # 1. Truncated safetensors, corrupt config.json under --model / --init.
    ("truncated-sample", "sample --model {trunc}", 2, "truncated: cannot be read (Error while deserializing header"),
    ("truncated-eval", "eval --model {trunc} --nfe 4", 2, "truncated: cannot be read"),
    ("truncated-probe", "probe --model {trunc}", 2, "truncated: cannot be read"),
    ("truncated-trap", "marginal-trap --mode model --model {trunc}", 2, "truncated: cannot be read"),
    ("truncated-init", "train --init {trunc} " + SMALL, 2, "truncated: cannot be read"),
    ("bad-config-sample", "sample --model {bad_config}", 2, "config.json: not valid JSON"),
    ("bad-config-init", "train --init {bad_config} " + SMALL, 2, "config.json: not valid JSON"),
    # 1. Seeds outside [0, 2^32), everywhere alike.
    *[(f"seed-{c}-{s}", f"{c} --seed {s}", 2, "seed: Input should be") for c in ("train", "marginal-trap", "sample", "probe", "eval")
      for s in ("-1", "4294967296")],
    ("seed-bool", "train --set seed=true", 2, "seed: not a true/false field"),
    ("lr-bool", "train --set optim.lr=true", 2, "optim.lr: not a true/false field"),
    # 1. Values that passed the spec and crashed the job.
    ("betas-nan", "train --set optim.betas=[.nan,0.9]", 2, "optim.betas.0: Input should be a finite number"),
    ("betas-one", "train --set optim.betas=[0.9,1.0]", 2, "optim.betas.1: Input should be less than 1"),
    ("temperature-inf", "sample --temperature inf", 2, "sampling.temperature: Input should be a finite number"),
    ("temperature-nan", "eval --set sampling.temperature=.nan", 2, "sampling.temperature: Input should be a finite number"),
    ("top-k-above-vocab", "probe --model {run} --top-k 1000 --num-masks 4", 2, "probe.top_k: 1000 is above the 105 ids"),
    ("mask-id-outside", "probe --model {run} --set probe.mask_id=1000 --num-masks 4", 2, "probe.mask_id: 1000 is outside the model's vocabulary (106 ids)"),
    ("mask-id-negative", "probe --set probe.mask_id=-1", 2, "probe.mask_id: Input should be greater than or equal to 0"),
    # 1. Samples files: empty text, ids out of range or of several lengths.
    ("samples-empty-text", "eval --samples {empty_text}", 2, "empty_text.jsonl:2: 'text' is empty"),
    ("samples-blank-text", "eval --samples {blank_text}", 2, "blank_text.jsonl:1: 'text' is empty"),
    ("samples-id-outside", "eval --samples {big_id}", 2, "big_id.jsonl:1: id 999999 is outside the synthetic language's 105 tokens"),
    ("samples-id-negative", "eval --samples {neg_id}", 2, "neg_id.jsonl:1: 'ids' must be a non-empty list of integers"),
    ("samples-id-bool", "eval --samples {bool_id}", 2, "bool_id.jsonl:1: 'ids' must be a non-empty list of integers"),
    ("samples-ragged", "eval --samples {ragged}", 2, "ragged.jsonl:2: 1 ids where line 1 has 2"),
    ("samples-uneven-oracle", "eval --samples {uneven}", 2, "the oracle judges texts of one length"),
    # 1. Joints: NaN (it passed the sum-to-one check), infinity, keys that collide.
    ("joint-nan", "marginal-trap --joint {nan_joint}", 2, "'I like': probability must be a finite non-negative number"),
    ("joint-inf", "marginal-trap --joint {inf_joint}", 2, "'I like': probability must be a finite non-negative number"),
    ("joint-collision", "marginal-trap --joint {dup_joint}", 2, "'I  like' and 'I like' are the same combination"),
    # 1. --out a file, an unwritable place, empty; (the full disk runs end to end below).
    ("out-file", "sample --model {run} --out {file}", 2, "--out {file}: is a file, not a folder"),
    ("out-under-file", "marginal-trap --out {file}/run", 2, "cannot write there (Not a directory)"),
    ("out-proc", "marginal-trap --out /proc/no-such/run", 2, "--out /proc/no-such/run: cannot write there"),
    ("out-empty", "train --out ''", 2, "Invalid value for '--out': empty path"),
    ("resume-empty", "train --resume ''", 2, "Invalid value for '--resume': empty path"),
    # 1. An empty data folder; a data folder or samples folder given as a file.
    ("data-empty-folder", "train --init none --set data.source={empty} --set data.tokenizer={tok} " + SMALL, 2, "data.source: cannot load"),
    ("samples-folder", "eval --samples {folder}", 2, "samples: {folder}: is a folder, not a file"),
    ("prompts-folder", "probe --prompts {folder} --model {run}", 2, "probe.prompts: {folder}: is a folder, not a file"),
    ("spec-folder", "sample --spec {folder}", 2, "--spec: {folder}: is a folder, not a file"),
    ("data-txt-folder", "train --init none --set data.source={root}/dir.txt --set data.tokenizer={tok} " + SMALL, 2, "data.source: {root}/dir.txt: is a folder, not a file"),
    # 1./3. --resume with another model size (crashed in load_state).
    ("resume-model-size", "train --resume {interrupted} --set model.size=small", 2, "model.size: 'small' differs from the run's 'tiny'"),
    # 2. Accepted silently before.
    ("lr-inf", "train --lr inf", 2, "optim.lr: Input should be a finite number"),
    ("lr-nan", "train --lr nan", 2, "optim.lr: Input should be a finite number"),
    ("weight-decay-inf", "train --set optim.weight_decay=.inf", 2, "optim.weight_decay: Input should be a finite number"),
    ("nfe-zero-sample", "sample --nfe 0", 2, "sampling.nfe: Input should be greater than or equal to 1"),
    ("nfe-above-length-sample", "sample --model {run} --nfe 64", 2, "sampling.nfe: 64 is above the sequence length (16)"),
    ("nfe-above-seq-len", "sample --seq-len 8 --nfe 16", 2, "sampling.nfe: 16 is above the sequence length (8)"),
    ("nfe-above-length-eval", "eval --model {run} --nfe 4,64", 2, "evaluation.nfe: 64 is above the sequence length (16)"),
    ("nfe-above-length", "train --nfe 64 --set data.seq_len=16", 2, "nfe: 64 is above data.seq_len (16)"),
    ("seq-len-beyond-model", "sample --model {run} --seq-len 64", 2, "sampling.seq_len: 64 is above the model's length (16)"),
    ("seq-len-beyond-init", "train --init {run} --set data.seq_len=64 " + SMALL, 2, "data.seq_len: 64 is above the length of model.init (16)"),
    ("masks-beyond-model", "probe --model {run} --num-masks 100", 2, "probe.num_masks: 100 masks after a"),
    ("prompt-beyond-model", "probe --model {run} --prompt '{long_prompt}' --num-masks 2", 2, "masks after a 30-token prompt are above the model's length (16)"),
    ("trap-seq-len-beyond-model", "marginal-trap --mode model --model {run} --set trap.seq_len=64", 2, "trap.seq_len: 64 is above the model's length (16)"),
    ("probe-empty-prompt", "probe --prompt ''", 2, "probe.prompt: must not be empty"),
    ("probe-empty-prompts", "probe --prompts ''", 2, "probe.prompts: must not be empty"),
    ("init-empty", "train --init ''", 2, "model.init: must not be empty"),
    ("model-empty", "sample --model ''", 2, "model: must not be empty"),
    ("exact-unknown", "sample --model exact:bert", 2, "model: exact:bert: the exact denoiser is exact:mdlm or exact:duo"),
    ("exact-init", "train --init exact:mdlm", 2, "model: exact:mdlm is the synthetic language's exact posterior, not weights"),
    ("exact-probe-duo", "probe --model exact:duo", 2, "probe.model: exact:duo is a duo backbone without a mask token"),
    ("exact-probe-words", "probe --model exact:mdlm --prompt 'hello world'", 2, "probe: prompt 0 has words outside the synthetic language"),
    ("trap-model-with-joint", "marginal-trap --mode model --joint {joint}", 2, "trap: mode model measures a denoiser"),
    ("trap-model-without-mode", "marginal-trap --model {run}", 2, "trap: model is read only with mode model"),
    ("tracker-missing", "train --set logging.trackers=[{tracker}]", 2, "logging.trackers: {tracker} is not installed"),
    ("resume-lower-max-steps", "train --resume {interrupted} --max-steps 1", 2, "optim.max_steps: 1 is below the checkpoint's step 2"),
    ("resume-other-seed", "train --resume {interrupted} --seed 8", 2, "seed: 8 differs from the run's 0"),
    ("resume-finished", "train --resume {run}", 2, "the run finished at step 60"),
    # 3. A folder that holds a run is that run's.
    ("folder-train", "train --out {interrupted}", 2, "holds an unfinished run"),
    ("folder-sample", "sample --model {run} --out {interrupted}", 2, "holds an unfinished run"),
    ("folder-eval", "eval --samples {samples} --out {run}", 2, "holds a finished run"),
    ("folder-probe", "probe --out {run}", 2, "holds a finished run"),
    ("folder-trap", "marginal-trap --out {interrupted}", 2, "holds an unfinished run"),
    ("resume-no-run", "train --resume {empty} --spec {interrupted}/spec.yaml", 2, "holds no run to resume"),
    # 4. Usage errors, one line; the right words for a folder and for the reference file.
    ("usage-unknown-flag", "train --bogus", 2, "tokendrift train: No such option: --bogus"),
    ("usage-not-a-number", "sample --nfe abc", 2, "Invalid value for '--nfe'"),
    ("usage-not-an-integer", "eval --num-samples 1.5", 2, "Invalid value for '--num-samples'"),
    ("usage-probe", "probe --top-k x", 2, "Invalid value for '--top-k'"),
    ("usage-trap", "marginal-trap --bogus", 2, "No such option: --bogus"),
    ("usage-presets", "presets --bogus", 2, "No such option: --bogus"),
    ("usage-command", "bogus", 2, "No such command 'bogus'"),
    ("presets-unknown", "presets no-such-preset", 2, "no such preset"),
    ("reference-field", "eval --samples {samples} --set evaluation.reference={root}/missing.txt", 2, "evaluation.reference: {root}/missing.txt: file not found"),
    ("set-bad-yaml", "train --set optim.lr=[", 2, "--set optim.lr=[: the value is not valid YAML"),
    ("spec-not-yaml", "sample --spec {yaml_syntax}", 2, "syntax.yaml: line 3: not valid YAML"),
    ("spec-not-a-mapping", "probe --spec {yaml_list}", 2, "list.yaml: expected a mapping of spec fields, got list"),
    ("run-spec-invalid-sample", "sample --model {bad_run} --nfe 4", 2, "bad-run/spec.yaml: diffusion.eps: Input should be less than 1"),
    ("run-spec-invalid-eval", "eval --model {bad_run} --nfe 4", 2, "bad-run/spec.yaml: diffusion.eps: Input should be less than 1"),
    # Named options are read off the spec: a choice or a list item is the spec's to refuse, naming the field.
    ("choice-bad", "train --backbone bogus", 2, "model.backbone: Input should be 'mdlm' or 'duo' (got 'bogus')"),
    ("csv-not-a-number", "eval --nfe 4,x", 2, "evaluation.nfe.1: Input should be a valid integer"),
    ("csv-bad-choice", "eval --metrics genppl,bogus", 2, "evaluation.metrics.1: Input should be 'genppl', 'entropy', 'val_ppl' or 'ngram_jsd'"),
    ("resume-other-out", "train --resume {interrupted} --out {root}/elsewhere", 2, "--resume DIR continues in DIR; drop --out"),
    # Issue 25. Tracebacks before: nesting, layers and encoders found only once loaded, a name too
    # long, a checkpoint's truncated weights (the full disk at the lock runs end to end below).
    ("spec-nested-yaml", "sample --spec {deep_yaml}", 2, "deep.yaml: nested too deeply to be a spec"),
    ("spec-nested-json", "train --spec {deep_json}", 2, "deep.json: nested too deeply to be a spec"),
    ("feature-layer-outside", "train --init {run} --set drift.features=layers --set drift.feature_layers=[99] --set data.seq_len=16 " + SMALL,
     2, "drift.feature_layers: 99 is not one of the encoder's 5 hidden states"),
    ("encoder-missing", "train --init {run} --set drift.encoder={root}/no-encoder --set data.seq_len=16 " + SMALL,
     2, "drift.encoder: {root}/no-encoder: cannot be loaded"),
    ("out-name-too-long", "marginal-trap --out {root}/" + "x" * 300, 2, "cannot write there (File name too long)"),
    ("resume-truncated-weights", "train --resume {trunc_run}", 2, "--resume {trunc_run}: checkpoint-2 does not load"),
    # Issue 25. Accepted silently before.
    ("spec-key-twice-yaml", "train --spec {twice_yaml}", 2, "twice.yaml: line 4: 'optim' is given twice"),
    ("spec-key-twice-json", "train --spec {twice_json}", 2, "twice-spec.json: 'lr' is given twice"),
    ("joint-key-twice", "marginal-trap --joint {twice_joint}", 2, "twice.json: 'I like' is given twice"),
    ("samples-val-ppl", "eval --samples {samples} --metrics val_ppl", 2, "evaluation.metrics: val_ppl scores a model (--model)"),
    ("eos-ids-outside", "probe --model {run} --set probe.eos_ids=[3,5000] --num-masks 4", 2, "probe.eos_ids: 5000 is outside the model's vocabulary (106 ids)"),
    ("prompts-empty-prompt", "probe --prompts {empty_prompt} --model {run}", 2, "empty_prompt.jsonl:2: 'prompt' is empty"),
    ("presets-path", "presets ../../x", 2, "no such preset"),
    # Issue 25. Unclear before.
    ("spec-fifo", "sample --spec {fifo}", 2, "--spec: {fifo}: not a regular file (a pipe, socket or device)"),
    ("out-dangling-link", "marginal-trap --out {dangling}", 2, "--out {dangling}: is a broken symbolic link"),
    ("out-link-loop", "marginal-trap --out {loop}", 2, "--out {loop}: is a broken symbolic link"),
    ("path-with-newline", "sample --spec '{root}/a\nb.yaml'", 2, "{root}/a\\nb.yaml: file not found"),
    ("set-empty-key-part", "sample --set .nfe=4", 2, "--set .nfe=4: the key '.nfe' has an empty part"),
    # Issue 25. No run's files written by another: nothing starts inside a run folder or around one.
    ("out-in-checkpoint", "train --init none --max-steps 2 --out {run}/checkpoints/checkpoint-60", 2, "is inside the run folder {run}"),
    ("out-in-model", "sample --model {run} --out {run}/model", 2, "is inside the run folder {run}"),
    ("out-in-run-eval", "eval --samples {samples} --out {interrupted}/new", 2, "is inside the run folder {interrupted}"),
    ("out-around-run", "marginal-trap --out {runs}", 2, "holds the run folder {run}"),
]


def _fill(text: str, paths: dict) -> str:
    return text.format(tracker=_missing_tracker(), **paths)


def _assert_one_error_line(code: int, stdout: str, stderr: str, expected_code: int, fragment: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert fragment in lines[0], lines[0]
    assert code == expected_code, lines[0]
    assert stdout == "", stdout  # --json: one object on success, nothing on failure


def test_the_corpus_covers_every_subcommand_with_at_least_60_cases():
    commands = {args.split()[0] for _, args, _, _ in CASES}
    assert {"train", "sample", "eval", "probe", "marginal-trap", "presets"} <= commands
    assert len(CASES) + len(SUBPROCESS_CASES) >= 60


@pytest.mark.parametrize("args, code, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gives_one_error_line(cli, paths, tmp_path, args, code, fragment):
    if "{tracker}" in args and not _missing_tracker():
        pytest.skip("every tracker is installed here")
    import shlex

    argv = shlex.split(_fill(args, paths))
    if "--out" not in argv and "--resume" not in argv and argv[0] != "presets":
        argv += ["--out", str(tmp_path / "out")]
    exit_code, stdout, stderr = cli(*argv, "--json")
    _assert_one_error_line(exit_code, stdout, stderr, code, _fill(fragment, paths))
    assert not (tmp_path / "out").exists()  # a refused start leaves nothing, wherever it was refused


def test_a_full_disk_at_the_lock(cli, tmp_path, monkeypatch):
    """The lock's pid is the first byte a run writes; on a full disk the start is refused and the
    folder it made is gone. (A file-size limit low enough to fail it fails Python's own start.)"""

    def full_disk(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    out = tmp_path / "runs" / "trap"
    exit_code, stdout, stderr = cli("marginal-trap", "--out", str(out), "--json")
    _assert_one_error_line(exit_code, stdout, stderr, 2, f"--out {out}: cannot write there (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_fp16_is_refused_without_a_gpu(cli, paths, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 runs on a CUDA GPU")
    out = tmp_path / "out"
    exit_code, stdout, stderr = cli("train", "--init", "none", "--set", "optim.mixed_precision=fp16", *_fill(SMALL, paths).split(), "--out", str(out), "--json")
    _assert_one_error_line(exit_code, stdout, stderr, 2, "optim.mixed_precision: fp16 needs a CUDA GPU and there is none")
    assert not out.exists()


def test_eval_nfe_zero(cli, paths, tmp_path):
    exit_code, stdout, stderr = cli("eval", "--model", paths["run"], "--nfe", "0", "--out", str(tmp_path / "out"), "--json")
    _assert_one_error_line(exit_code, stdout, stderr, 2, "evaluation.nfe")


def _limit_file_size() -> None:
    # A file may grow to 20 kB: writes past it fail with EFBIG, as on a full disk (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


# Real processes: the entry point, Rich, Typer and the job, end to end.
SUBPROCESS_CASES = [
    ("markup-spec", "train --spec {root}/[/oops].yaml", 2, "[/oops].yaml: file not found", None),
    ("unknown-flag", "train --bogus", 2, "No such option: --bogus", None),
    ("utf8-joint", "marginal-trap --joint {bad_json} --out {tmp}/j", 2, "joint.json:1: not UTF-8", None),
    ("out-file", "sample --model {run} --out {file}", 2, "is a file, not a folder", None),
    ("full-disk", "sample --model {run} --nfe 4 --num-samples 300 --batch-size 300 --out {tmp}/s --quiet", 1,
     "samples.jsonl: File too large", _limit_file_size),
]


@pytest.mark.parametrize("args, code, fragment, limit", [case[1:] for case in SUBPROCESS_CASES], ids=[case[0] for case in SUBPROCESS_CASES])
def test_bad_input_end_to_end(paths, tmp_path, args, code, fragment, limit):
    import shlex

    argv = shlex.split(args.format(tmp=tmp_path, **paths))
    done = subprocess.run(
        [sys.executable, "-m", "tokendrift_cli", *argv, "--json"], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limit, timeout=300,
    )
    _assert_one_error_line(done.returncode, done.stdout, done.stderr, code, fragment.format(**paths))
    assert list(tmp_path.iterdir()) == []  # the refused or failed start took back the folder it made


def test_a_diverged_run_writes_strict_json(cli, paths, tmp_path):
    """lr 1e30 turns the loss into NaN at step 2: --json and metrics.jsonl say null, never bare NaN."""
    out = tmp_path / "run"
    code, stdout, stderr = cli(
        "train", "--objective", "diffusion", "--init", "none", "--max-steps", "3", "--out", str(out), "--json", "--quiet",
        "--set", "quality.num_samples=0", *_fill(SMALL, paths).split(), "--set", "data.seq_len=16", "--set", "optim.lr=1e30", "--set", "optim.grad_clip=0",
        "--set", "optim.warmup_steps=0", "--set", "logging.log_every=1",
    )
    assert code == 0, stderr
    strict = {"parse_constant": lambda name: pytest.fail(f"bare {name}")}
    result = json.loads(stdout, **strict)
    rows = [json.loads(line, **strict) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] is not None and rows[-1]["loss"] is None and result["loss"] is None
    assert json.loads((out / "results.json").read_text(), **strict) == result
