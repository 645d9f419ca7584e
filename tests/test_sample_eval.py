"""`tokendrift sample` and `tokendrift eval` end to end on a tiny trained run."""

import json
import math

import pytest
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
    (["--set", "sampling.nfe=8"], "sampling.nfe: unknown field"),  # eval's NFE is evaluation.nfe alone
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
    assert _val_ppl(str(run), torch.nn.Linear(1, 1), process, None, spec) == pytest.approx(math.e)
    split, _ = load_data(DataSpec(**data), seed=7)
    train = {tuple(row) for row in split["train"]["input_ids"]}
    assert process.scored == [tuple(row) for row in split["validation"]["input_ids"]]
    assert len(process.scored) >= 15 and not train & set(process.scored)
