"""Gen.-PPL (judge LM and exact oracle), entropy and n-gram JSD against independent computations."""

import math

import pytest
import torch

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.metrics.genppl import HFJudge
from tokendrift_cli.metrics.oracle import OracleJudge
from tokendrift_cli.metrics.text_stats import jensen_shannon, ngram_counts, ngram_jsd, sample_entropy, sample_entropy_with_se

WORDS = ["<|endoftext|>", "<unk>", "the", "cat", "dog", "runs", "sleeps", "a", "big", "."]


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    """A tiny GPT-2 and word-level tokenizer, built and saved locally like a hub judge."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("judge")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=8, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


TEXTS = [
    "the cat runs . the dog sleeps . a big cat runs . the dog",  # 14 tokens: longer than the 8-token context
    "a big dog sleeps <|endoftext|> the cat",  # EOS in the middle
    "the dog .",  # short: padded with EOS
]


def reference_nll_per_text(folder: str, texts: list[str], max_length: int) -> list[tuple[float, int]]:
    """One text at a time, written from the protocol: keep max_length tokens, pad to the longest
    with EOS, 8-token chunks, count non-EOS targets and the first EOS of each chunk. Each text's
    (summed NLL, counted tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    rows = [tokenizer(t)["input_ids"][:max_length] for t in texts]
    width = max(map(len, rows))
    per_text = []
    for row in rows:
        nll, count = 0.0, 0
        mask = [1] * len(row) + [0] * (width - len(row))
        row = row + [0] * (width - len(row))
        for start in range(0, width, 8):
            chunk, chunk_mask = row[start:start + 8], mask[start:start + 8]
            with torch.no_grad():
                logits = model(torch.tensor([chunk]), attention_mask=torch.tensor([chunk_mask])).logits[0]
            seen_eos = 0
            for position, token in enumerate(chunk):
                seen_eos += token == 0
                if position == 0:
                    continue
                if token != 0 or seen_eos == 1:
                    nll -= float(logits[position - 1].log_softmax(-1)[token])
                    count += 1
        per_text.append((nll, count))
    return per_text


def reference_gen_ppl(folder: str, texts: list[str], max_length: int) -> float:
    per_text = reference_nll_per_text(folder, texts, max_length)
    return math.exp(sum(n for n, _ in per_text) / sum(c for _, c in per_text))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_hf_judge_matches_an_independent_loop(tiny_judge, batch_size):
    """Samples of a model 16 tokens long: truncated to 16, scored in two 8-token chunks."""
    got = HFJudge(tiny_judge, device="cpu", batch_size=batch_size).score(TEXTS, max_length=16)
    # Batched (padded) and one text at a time run different kernels: float32 logits of this 2-layer,
    # width-16 judge differ by ~1e-6, the mean NLL by as much, Gen.-PPL = exp(NLL) by ~1e-6 relative.
    assert got.gen_ppl == pytest.approx(reference_gen_ppl(tiny_judge, TEXTS, max_length=16), rel=1e-4)


def test_hf_judge_se_is_the_delta_method_on_each_texts_own_nll(tiny_judge):
    """SE of exp(R), R = Σ NLLᵢ / Σ tokensᵢ: exp(R) · √(Σ (NLLᵢ − R·tokensᵢ)² / (n(n − 1))) / mean(tokens),
    on per-text NLLs and counts from the independent loop."""
    per_text = reference_nll_per_text(tiny_judge, TEXTS, max_length=16)
    n, nll, tokens = len(per_text), sum(a for a, _ in per_text), sum(b for _, b in per_text)
    ratio = nll / tokens
    expected = math.exp(ratio) * math.sqrt(sum((a - ratio * b) ** 2 for a, b in per_text) / (n * (n - 1))) / (tokens / n)
    got = HFJudge(tiny_judge, device="cpu", batch_size=2).score(TEXTS, max_length=16)
    assert got.gen_ppl_se == pytest.approx(expected, rel=1e-4)


def test_texts_from_a_file_are_cut_at_the_judges_context_as_duo_does(tiny_judge):
    """With no sampler length (eval --samples), DUO's retokenizer truncates to the judge's maximum
    length: the 14-token text is scored on its first 8 tokens, not in two chunks."""
    got = HFJudge(tiny_judge, device="cpu").score(TEXTS)
    assert got.gen_ppl == pytest.approx(reference_gen_ppl(tiny_judge, TEXTS, max_length=8), rel=1e-4)
    # Targets (the first token is none): 7 words; big dog sleeps, its EOS, the cat (the padding EOS
    # after it is not the chunk's first); dog . and the first padding EOS.
    assert got.num_tokens == 7 + 6 + 3


def test_evaluate_module_loads_offline_and_agrees(tiny_judge, monkeypatch):
    import evaluate

    import tokendrift_cli.metrics.genppl_metric as module

    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    metric = evaluate.load(module.__path__[0])
    result = metric.compute(predictions=TEXTS, model_id=tiny_judge, batch_size=2)
    # The same batches through the same judge on the same (default) device: the same kernels in the
    # same order, so equal to the last bits.
    assert result["gen_ppl"] == pytest.approx(HFJudge(tiny_judge, batch_size=2).score(TEXTS).gen_ppl, rel=1e-12)


@pytest.fixture(scope="module")
def oracle():
    return OracleJudge(SyntheticLanguage(), epsilon=1e-3)


def test_oracle_on_the_languages_own_samples_is_exp_entropy(oracle):
    language, length = oracle.language, 24
    result = oracle.score_ids(language.sample(4000, length, seed=0))
    assert result.acceptance == 1.0
    assert math.log(result.gen_ppl_accepted) == pytest.approx(language.entropy(length), rel=0.02)
    # Smoothing costs at most log(1 / (1 - eps)) per token on valid text.
    assert math.log(result.gen_ppl) == pytest.approx(math.log(result.gen_ppl_accepted), abs=1.1e-3)


def test_oracle_scores_uniform_noise_far_worse_and_rejects_it(oracle):
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, oracle.language.num_data_tokens, (500, 24), generator=g)
    result = oracle.score_ids(noise)
    floor = oracle.floor(24, 1000, seed=1)
    assert result.acceptance < 0.01
    assert result.gen_ppl > 20 * floor["gen_ppl"]
    assert floor["exact_gen_ppl"] == pytest.approx(math.exp(oracle.language.entropy(24)))


def test_oracle_gen_ppl_is_the_noisy_channel_likelihood(oracle):
    language, eps = oracle.language, oracle.epsilon
    ids = torch.tensor([language.encode("I like tennis ."), language.encode("I likes tennis .")])
    result = oracle.score_ids(ids)
    assert math.log(result.gen_ppl) == pytest.approx(float(-language.noisy_log_prob(ids, eps).sum()) / 8, rel=1e-12)
    valid, slipped = language.noisy_log_prob(ids, eps).tolist()
    # A valid sentence keeps nearly its exact probability; one wrong word costs about log(|V| / eps).
    assert valid == pytest.approx(float(language.log_prob(ids[:1])) + 4 * math.log(1 - eps), abs=0.05)
    assert 0.5 * math.log(language.num_data_tokens / eps) < valid - slipped < 1.5 * math.log(language.num_data_tokens / eps)


def test_sample_entropy_by_hand():
    assert sample_entropy([[1, 1, 2, 2], [5, 5, 5, 5]]) == pytest.approx((math.log(2) + 0.0) / 2)
    # entropies ln 2 and 0: mean ln2 / 2, SE = sample SD / sqrt(2) = (ln 2 / sqrt 2) / sqrt 2 = ln 2 / 2
    assert sample_entropy_with_se([[1, 1, 2, 2], [5, 5, 5, 5]]) == pytest.approx({"entropy": math.log(2) / 2, "entropy_se": math.log(2) / 2})


def test_jensen_shannon_bounds_and_a_hand_case():
    a, b = ngram_counts([["x", "y"]], 1), ngram_counts([["z", "w"]], 1)
    assert jensen_shannon(a, a) == 0.0 and jensen_shannon(a, b) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): JSD = 1/2 [log2(1/0.75)] + 1/2 [1/2 log2(0.5/0.75) + 1/2 log2(0.5/0.25)]
    p, q = ngram_counts([["x", "x"]], 1), ngram_counts([["x", "y"]], 1)
    expected = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert jensen_shannon(p, q) == pytest.approx(expected)


def test_ngram_jsd_sees_a_collapsed_sampler():
    language = SyntheticLanguage()
    reference = [language.decode(row) for row in language.sample(300, 24, seed=0).tolist()]
    fresh = [language.decode(row) for row in language.sample(300, 24, seed=1).tolist()]
    collapsed = ["the cat sleeps . " * 6] * 300
    same, gamed = ngram_jsd(fresh, reference), ngram_jsd(collapsed, reference)
    assert same["jsd_1"] < 0.01 and gamed["jsd_1"] > 0.5  # unigrams: the collapse is plain
    assert gamed["mean"] > 3 * same["mean"]  # higher n are sparse at 300 samples, but still far apart


def test_ngram_jsd_is_the_same_number_under_any_string_hash_seed():
    """Set order follows the per-process string hash; the divergence must not (its last bits did)."""
    import os
    import subprocess
    import sys

    code = ("from tokendrift_cli.metrics.text_stats import ngram_jsd; "
            "print(repr(ngram_jsd(['I like tennis . he likes it', 'we like it .'], ['I like it .', 'he likes tennis .'])['mean']))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(outputs) == 1
