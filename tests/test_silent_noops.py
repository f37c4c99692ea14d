"""Params that would do nothing are warned about (sampling knobs while greedy) or refused (decoding
params on an extractive summarizer)."""

from __future__ import annotations

import warnings

import pytest
from fixtures_decoding import decoding_model_dirs  # noqa: F401  (session fixture)

import taskhub
from taskhub import ParamError

TEXT = (
    "The river rose after a week of rain. Farmers moved their animals to higher ground. "
    "By Friday the water had reached the old bridge. Engineers said the bridge would hold."
)


def test_sampling_knobs_without_do_sample_warn_once(decoding_model_dirs):
    model = str(decoding_model_dirs["gpt2"])
    greedy = taskhub.run_task("text-generation", "Once upon", model=model, max_new_tokens=5, device="cpu")
    with pytest.warns(UserWarning, match="temperature, top_p only apply when sampling") as caught:
        knobbed = taskhub.run_task(
            "text-generation", "Once upon", model=model, max_new_tokens=5, temperature=0.3, top_p=0.5, device="cpu"
        )
    assert len([w for w in caught if "only apply when sampling" in str(w.message)]) == 1
    assert knobbed == greedy  # ignored indeed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same knobs again: no second warning
        taskhub.run_task("text-generation", "Once upon", model=model, max_new_tokens=5, temperature=0.3, top_p=0.5)
        taskhub.run_task("text-generation", "Once upon", model=model, max_new_tokens=5, temperature=0.3, do_sample=True)


def test_extractive_summarization_refuses_decoding_params():
    with pytest.raises(ParamError, match="max_new_tokens, num_beams: decoding controls apply to generated summaries"):
        taskhub.run_task("summarization", TEXT, max_new_tokens=20, num_beams=4, device="cpu")
    summary = taskhub.run_task("summarization", TEXT, num_sentences=1, device="cpu")
    sentence = summary[0]["summary_text"]
    assert sentence in TEXT and sentence.count(".") == 1
