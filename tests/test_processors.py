"""Each logits processor against transformers' own class (or the OpenAI formula) on random inputs."""

from __future__ import annotations

import pytest
import torch
from taskhub_textgen import processors as ours
from taskhub_textgen.config import GenerationConfig
from transformers.generation import logits_process as hf

BATCH, LENGTH, VOCAB, PROMPT = 4, 12, 50, 5
DEVICE = torch.device("cpu")


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with repeats (small id range) and random scores with some ties."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 12, (BATCH, LENGTH), generator=gen)
    scores = torch.randn(BATCH, VOCAB, generator=gen) * 3
    scores[:, 7] = scores[:, 8]  # a tie
    return ids, scores


def check(ours_out: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(ours_out), torch.isinf(theirs))
    torch.testing.assert_close(ours_out, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty(inputs, penalty):
    ids, scores = inputs
    check(
        ours.repetition_penalty(penalty, None)(ids, scores),
        hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone()),
    )


def test_repetition_penalty_ignores_left_padding(inputs):
    ids, scores = inputs
    pad_lens = torch.tensor([0, 3, 1, 5])
    theirs = hf.RepetitionPenaltyLogitsProcessor(1.7, prompt_ignore_length=pad_lens)(ids, scores.clone())
    mine = ours.repetition_penalty(1.7, pad_lens)(ids, scores)
    check(mine, theirs)
    assert not torch.equal(mine, ours.repetition_penalty(1.7, None)(ids, scores))


@pytest.mark.parametrize("presence, frequency", [(0.0, 0.7), (1.5, 0.0), (0.6, -0.4)])
def test_presence_frequency_penalty_formula(inputs, presence, frequency):
    ids, scores = inputs
    expected = scores.clone()
    for b in range(BATCH):
        generated = ids[b, PROMPT:].tolist()
        for token in set(generated):
            count = generated.count(token)
            expected[b, token] -= frequency * count + presence * (count > 0)
    check(ours.presence_frequency_penalty(presence, frequency, PROMPT)(ids, scores), expected)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_repeat_ngram(inputs, size):
    ids, scores = inputs
    check(ours.no_repeat_ngram(size)(ids, scores), hf.NoRepeatNGramLogitsProcessor(size)(ids, scores.clone()))


def test_bad_words(inputs):
    ids, scores = inputs
    last = ids[0, -2:].tolist()  # a two-token sequence whose prefix ends row 0
    bad = [[3], [9, 4], [last[0], 11], [ids[1, -1].item(), 6], [1, 2, 3], [2]]  # [2] is EOS: never banned
    mine = ours.bad_words(bad, [2], VOCAB, DEVICE)(ids, scores)
    check(mine, hf.NoBadWordsLogitsProcessor(bad, eos_token_id=2)(ids, scores.clone()))
    assert torch.isinf(mine[1, 6]) and not torch.isinf(mine[:, 2]).any()


def test_logit_bias_matches_sequence_bias(inputs):
    ids, scores = inputs
    bias = {4: 2.5, 17: -3.0, 30: 1.0}
    theirs = hf.SequenceBiasLogitsProcessor([[[k], v] for k, v in bias.items()])(ids, scores.clone())
    check(ours.logit_bias(bias, VOCAB, DEVICE)(ids, scores), theirs)


@pytest.mark.parametrize("minimum", [3, 7, 8])
def test_min_new_tokens(inputs, minimum):
    ids, scores = inputs
    theirs = hf.MinNewTokensLengthLogitsProcessor(PROMPT, minimum, [2, 5])(ids, scores.clone())
    check(ours.min_new_tokens(minimum, PROMPT, [2, 5], DEVICE)(ids, scores), theirs)


def test_forced_tokens_and_suppression(inputs):
    ids, scores = inputs
    one = ids[:, :1]
    check(ours.force_token_at(4, 1)(one, scores), hf.ForcedBOSTokenLogitsProcessor(4)(one, scores.clone()))
    check(
        ours.force_token_at(2, LENGTH)(ids, scores),
        hf.ForcedEOSTokenLogitsProcessor(LENGTH + 1, 2)(ids, scores.clone()),
    )
    check(
        ours.suppress([1, 9], None, DEVICE)(ids, scores), hf.SuppressTokensLogitsProcessor([1, 9])(ids, scores.clone())
    )
    for at in (LENGTH, LENGTH + 1):
        theirs = hf.SuppressTokensAtBeginLogitsProcessor([3, 8], at)(ids, scores.clone())
        check(ours.suppress([3, 8], at, DEVICE)(ids, scores), theirs)


@pytest.mark.parametrize("value", [0.3, 0.7, 1.8])
def test_temperature(inputs, value):
    ids, scores = inputs
    check(ours.temperature(value)(ids, scores), hf.TemperatureLogitsWarper(value)(ids, scores.clone()))


@pytest.mark.parametrize("k, keep", [(1, 1), (5, 1), (8, 3), (2, 4)])
def test_top_k(inputs, k, keep):
    ids, scores = inputs
    theirs = hf.TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, scores.clone())
    check(ours.top_k(k, keep)(ids, scores), theirs)


@pytest.mark.parametrize("p, keep", [(0.1, 1), (0.5, 1), (0.9, 2), (0.99, 1)])
def test_top_p(inputs, p, keep):
    ids, scores = inputs
    check(ours.top_p(p, keep)(ids, scores), hf.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores.clone()))


@pytest.mark.parametrize("p, keep", [(0.05, 1), (0.3, 1), (0.9, 3)])
def test_min_p(inputs, p, keep):
    ids, scores = inputs
    check(ours.min_p(p, keep)(ids, scores), hf.MinPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores.clone()))


@pytest.mark.parametrize("mass, keep", [(0.2, 1), (0.6, 1), (0.95, 2)])
def test_typical_p(inputs, mass, keep):
    ids, scores = inputs
    theirs = hf.TypicalLogitsWarper(mass, min_tokens_to_keep=keep)(ids, scores.clone())
    check(ours.typical_p(mass, keep)(ids, scores), theirs)


def test_build_order_matches_transformers(inputs):
    """The whole chain, built from one config, equals transformers' list in its order."""
    ids, scores = inputs
    config = GenerationConfig(
        do_sample=True,
        max_new_tokens=20,
        min_new_tokens=10,
        eos_token_id=[2],
        logit_bias={5: 1.5, 6: -2.0},
        repetition_penalty=1.4,
        no_repeat_ngram_size=2,
        bad_words_ids=[[3], [9, 4]],
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        min_p=0.02,
        typical_p=0.95,
    )
    procs = ours.build_processors(config, prompt_len=PROMPT, pad_lens=None, vocab_size=VOCAB, device=DEVICE)
    theirs = hf.LogitsProcessorList(
        [
            hf.SequenceBiasLogitsProcessor([[[5], 1.5], [[6], -2.0]]),
            hf.RepetitionPenaltyLogitsProcessor(1.4),
            hf.NoRepeatNGramLogitsProcessor(2),
            hf.NoBadWordsLogitsProcessor([[3], [9, 4]], eos_token_id=2),
            hf.MinNewTokensLengthLogitsProcessor(PROMPT, 10, [2]),
            hf.TemperatureLogitsWarper(0.7),
            hf.TopKLogitsWarper(20),
            hf.TopPLogitsWarper(0.9),
            hf.MinPLogitsWarper(0.02),
            hf.TypicalLogitsWarper(0.95),
        ]
    )
    assert len(procs) == len(theirs)
    check(ours.apply_processors(procs, ids, scores), theirs(ids, scores.clone()))


def test_greedy_builds_no_warpers():
    config = GenerationConfig(temperature=0.5, top_k=3, top_p=0.5)
    assert ours.build_processors(config, prompt_len=1, pad_lens=None, vocab_size=VOCAB, device=DEVICE) == []
