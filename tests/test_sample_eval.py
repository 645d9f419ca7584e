"""`tokendrift sample` and `tokendrift eval` end to end on a tiny trained run."""

import json
import math
import os

import pytest
import torch
import yaml


def test_sample_json_and_file(cli, trained_run, tmp_path):
    code, out, err = cli("sample", "--model", str(trained_run), "--nfe", "8", "--num-samples", "10",
                         "--batch-size", "4", "--out", str(tmp_path / "s"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["nfe"] == 8 and result["num_samples"] == 10 and result["nfe_used_mean"] <= 8
    rows = [json.loads(line) for line in open(result["samples_path"])]
    assert len(rows) == 10 and all(len(r["ids"]) == 16 and r["nfe"] <= 8 for r in rows)
    assert all("[MASK]" not in r["text"] for r in rows)


def test_sample_without_model_and_no_runs_is_a_clear_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sample")
    assert code == 2 and "no finished train run" in err


def test_sample_without_model_says_which_run_it_picked(cli, trained_run, tmp_path, monkeypatch):
    import shutil

    for name in ("train-old", "train-new"):
        shutil.copytree(trained_run, tmp_path / "runs" / name)
    os.utime(tmp_path / "runs" / "train-old" / "model" / "config.json", (0, 0))  # finished long ago
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("sample", "--nfe", "4", "--num-samples", "2", "--out", "s", "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == "runs/train-new"
    assert "model: none given; using the latest finished train run, runs/train-new" in err


def test_eval_sweeps_nfe_with_the_oracle_and_writes_a_png(cli, trained_run, tmp_path):
    code, out, err = cli("eval", "--model", str(trained_run), "--nfe", "4,16", "--genppl-model", "oracle",
                         "--num-samples", "32", "--metrics", "genppl,entropy,val_ppl,ngram_jsd",
                         "--out", str(tmp_path / "e"), "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = result["rows"]
    assert [r["nfe"] for r in rows] == [4, 16]
    for row in rows:
        assert row["judge"] == "oracle" and row["gen_ppl"] > result["floor"]["gen_ppl"] * 0.5
        assert 0 <= row["acceptance"] <= 1 and row["entropy"] > 0 and 0 <= row["ngram_jsd"] <= 1
        assert row["val_ppl"] < 106  # clearly below the uniform bound |V|
    png = (tmp_path / "e" / "genppl_vs_nfe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_eval_writes_the_samples_it_judged_with_each_metrics_standard_error(cli, trained_run, tmp_path):
    """The samples eval judged are those `sample` draws with the same model, seed and NFE, and the
    row's numbers and standard errors follow from them: judging the saved file gives the same
    Gen.-PPL, and the entropy's SE is the SE of the file's per-sample entropies."""
    from tokendrift_cli.metrics.text_stats import sample_entropies
    from tokendrift_cli.metrics.uncertainty import mean_se

    code, out, err = cli("eval", "--model", str(trained_run), "--nfe", "4", "--genppl-model", "oracle", "--num-samples", "12",
                         "--out", str(tmp_path / "e"), "--json")
    assert code == 0, err
    row = json.loads(out)["rows"][0]
    for metric in ("gen_ppl", "entropy", "ngram_jsd"):
        assert row[f"{metric}_se"] > 0, metric
    p = row["acceptance"]
    assert row["acceptance_se"] == pytest.approx(math.sqrt(p * (1 - p) / 11), abs=1e-12)
    assert f"outputs in {tmp_path / 'e'}/" in err and "samples/" in err and "genppl_vs_nfe.png" in err
    code, out, err = cli("sample", "--model", str(trained_run), "--nfe", "4", "--num-samples", "12", "--out", str(tmp_path / "s"), "--json")
    assert code == 0, err
    judged = [json.loads(line) for line in open(row["samples_path"])]
    assert judged == [json.loads(line) for line in open(json.loads(out)["samples_path"])]
    assert row["entropy_se"] == pytest.approx(mean_se(sample_entropies([r["ids"] for r in judged])), rel=1e-12)
    code, out, err = cli("eval", "--samples", row["samples_path"], "--genppl-model", "oracle", "--out", str(tmp_path / "f"), "--json")
    assert code == 0, err
    again = json.loads(out)["rows"][0]
    assert (again["gen_ppl"], again["gen_ppl_se"]) == pytest.approx((row["gen_ppl"], row["gen_ppl_se"]), rel=1e-12)


def test_eval_pools_runs_that_differ_only_in_their_seed(cli, trained_run, tmp_path):
    """Two train runs whose specs differ only in seed form one group, whose mean and SD over the
    two are the rows' own; a run with another learning rate stands alone."""
    import shutil

    for name, change in (("seed1", {"seed": 1}), ("lr", {"optim": {"lr": 5e-4}})):
        shutil.copytree(trained_run, tmp_path / name)
        spec = yaml.safe_load((tmp_path / name / "spec.yaml").read_text())
        for key, value in change.items():
            spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
        (tmp_path / name / "spec.yaml").write_text(yaml.safe_dump(spec))
    # Other weights for the "seed 1" run, so its numbers differ from the first run's.
    from safetensors.torch import load_file, save_file

    weights_file = tmp_path / "seed1" / "model" / "model.safetensors"
    weights = load_file(weights_file)
    generator = torch.Generator().manual_seed(1)
    weights = {k: v + 0.3 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, weights_file, metadata={"format": "pt"})
    runs = [str(trained_run), str(tmp_path / "seed1"), str(tmp_path / "lr")]
    code, out, err = cli("eval", *[a for r in runs for a in ("--model", r)], "--nfe", "4", "--genppl-model", "oracle",
                         "--num-samples", "8", "--metrics", "genppl,entropy", "--out", str(tmp_path / "e"), "--json")
    assert code == 0, err
    result = json.loads(out)
    (group,) = result["over_seeds"]
    assert group["models"] == runs[:2] and group["seeds"] == [0, 1] and group["nfe"] == 4
    values = [r["gen_ppl"] for r in result["rows"][:2]]
    assert values[0] != values[1]
    assert group["gen_ppl"] == pytest.approx(sum(values) / 2, rel=1e-12)
    assert group["gen_ppl_sd"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2), abs=1e-12 * values[0])
    assert "over seeds · mean ± SD" in err


def test_eval_of_a_samples_file_with_the_oracle(cli, tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["I like tennis .", "I likes tennis ."]) + "\n")
    code, out, err = cli("eval", "--samples", str(path), "--json", "--out", str(tmp_path / "e"))
    assert code == 0, err
    row = json.loads(out)["rows"][0]
    assert row["judge"] == "oracle" and row["acceptance"] == 0.5


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\nnot json\n', "samples.jsonl:2: not valid JSON"),
    ('{"text": "a"}\n{"txt": "b"}\n', "samples.jsonl:2: expected an object with a string field 'text'"),
    ('{"text": "a", "ids": ["x"]}\n', "samples.jsonl:1: 'ids' must be a non-empty list of integers"),
    ("", "samples.jsonl: no samples"),
])
def test_malformed_samples_name_the_line_and_write_no_results(cli, tmp_path, content, message):
    path = tmp_path / "samples.jsonl"
    path.write_text(content)
    code, _, err = cli("eval", "--samples", str(path), "--out", str(tmp_path / "e"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "e" / "results.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--nfe", "0,4"], "evaluation.nfe.0: Input should be greater than or equal to 1 (got '0')"),
    (["--set", "evaluation.nfe=[4,-1]"], "evaluation.nfe.1: Input should be greater than or equal to 1 (got -1)"),
    (["--set", "sampling.nfe=8"], "sampling.nfe: unknown field (did you mean evaluation.nfe?)"),  # eval's NFE is evaluation.nfe alone
])
def test_eval_takes_one_nfe_field_and_only_nfe_of_at_least_one(cli, tmp_path, args, message):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"text": "I like tennis ."}) + "\n")
    code, _, err = cli("eval", "--samples", str(path), *args, "--out", str(tmp_path / "e"))
    assert code == 2 and [line for line in err.splitlines() if line.strip()] == [f"error: {message}"], err


def test_sample_rejects_nfe_zero(cli, tmp_path):
    code, _, err = cli("sample", "--model", "unused", "--nfe", "0", "--out", str(tmp_path / "s"))
    assert code == 2 and "sampling.nfe: Input should be greater than or equal to 1 (got 0)" in err


def test_val_ppl_scores_the_runs_own_held_out_blocks(tmp_path):
    """A corpus without a validation split is split by the run's seed; eval's own seed (0 here, the
    run's is 7) would hold out other blocks, some of which the run trained on."""
    import random

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokendrift_cli.data import load_data
    from tokendrift_cli.jobs.evaluate import _val_ppl
    from tokendrift_cli.spec import EvalSpec
    from tokendrift_cli.spec.data import DataSpec

    words = ["<|endoftext|>", "<unk>"] + [f"w{i}" for i in range(40)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>").save_pretrained(tmp_path / "tok")
    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words[2:]) for _ in range(rng.randint(3, 9))) for _ in range(80)) + "\n")
    data = {"source": str(corpus), "tokenizer": str(tmp_path / "tok"), "seq_len": 4, "valid_fraction": 0.2, "cache_dir": str(tmp_path / "cache")}
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").write_text(yaml.safe_dump({"command": "train", "seed": 7, "data": data}))

    class Recorder:  # the process's validation NELBO, recording what it is asked to score
        scored: list = []

        def val_nelbo(self, denoiser, batch, generator):
            self.scored += [tuple(row) for row in batch.tolist()]
            return torch.tensor(1.0)

    spec = EvalSpec(seed=0, models=[str(run)], evaluation={"metrics": ["val_ppl"], "valid_sequences": 1000})
    process = Recorder()
    class Model(torch.nn.Linear):  # a loaded denoiser's contract here: where it runs (PreTrainedModel.device)
        device = torch.device("cpu")

    assert _val_ppl(str(run), Model(1, 1), process, None, spec) == pytest.approx(math.e)
    split, _ = load_data(DataSpec(**data), seed=7)
    train = {tuple(row) for row in split["train"]["input_ids"]}
    assert process.scored == [tuple(row) for row in split["validation"]["input_ids"]]
    assert len(process.scored) >= 15 and not train & set(process.scored)
