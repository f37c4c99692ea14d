"""image-text-to-text: answers equal transformers' own pipeline on a tiny Llava; bad inputs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
import yaml
from fixtures_decoding import EOS, PAD
from fixtures_multimodal import image_paths, multimodal_models  # noqa: F401
from taskhub_multimodal.chat import ChatInputParams, chat_inputs
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.generate import generate
from taskhub_textgen.hf_backend import HFBackend
from transformers.image_utils import load_image as hf_load_image

import taskhub
from taskhub.cli import main
from taskhub.errors import BadInputError, ParamError


def user(*parts: Any) -> dict[str, Any]:
    """A user message: Paths become image parts, strings text parts."""
    content = [
        {"type": "image", "image": str(p)} if isinstance(p, Path) else {"type": "text", "text": p} for p in parts
    ]
    return {"role": "user", "content": content}


@pytest.fixture(scope="module")
def llava(multimodal_models: dict[str, Path]) -> Path:  # noqa: F811
    return multimodal_models["llava"]


@pytest.fixture(scope="module")
def hf_pipe(llava: Path) -> Any:
    return transformers.pipeline("image-text-to-text", model=str(llava))


def chats(images: list[Path]) -> list[list[dict[str, Any]]]:
    """Prompts of different lengths, one with two images, one with a system turn given as a plain string."""
    return [
        [user(images[0], "What is in this picture?")],
        [user(images[1], "Describe it.")],
        [{"role": "system", "content": "Answer briefly."}, user(images[2], "Colour?")],
        [user(images[0], images[3], "Which of the two is brighter, and why do you think so?")],
    ]


@pytest.mark.parametrize("full", [True, False], ids=["full_text", "new_text"])
def test_batched_chats_equal_the_transformers_pipeline(
    full: bool,
    llava: Path,
    hf_pipe: Any,
    image_paths: list[Path],  # noqa: F811
) -> None:
    conversations = chats(image_paths)
    got = taskhub.pipeline("image-text-to-text", str(llava), batch_size=4)(
        conversations, max_new_tokens=8, return_full_text=full
    )
    want = hf_pipe(text=conversations, max_new_tokens=8, return_full_text=full)
    assert got == want
    answers = [r[0]["generated_text"][-1]["content"] if full else r[0]["generated_text"] for r in got]
    assert len(set(answers)) == len(answers)


def test_assistant_prefill_is_continued_like_the_pipeline(llava: Path, hf_pipe: Any, image_paths: list[Path]) -> None:  # noqa: F811
    conversation = [
        user(image_paths[1], "Describe it."),
        {"role": "assistant", "content": [{"type": "text", "text": "It shows"}]},
    ]
    got = taskhub.run_task("image-text-to-text", conversation, model=str(llava), max_new_tokens=6)
    assert got == hf_pipe(text=conversation, max_new_tokens=6)
    assert got[0]["generated_text"][-1]["content"][0]["text"].startswith("It shows")


def test_beam_search_over_a_two_image_prompt_equals_generate(
    llava: Path, hf_pipe: Any, image_paths: list[Path]
) -> None:  # noqa: F811
    conversations = chats(image_paths)[2:]
    got = taskhub.pipeline("image-text-to-text", str(llava))(
        conversations, num_beams=2, num_return_sequences=2, max_new_tokens=6, return_full_text=False
    )
    want = hf_pipe(
        text=conversations,
        max_new_tokens=6,
        return_full_text=False,
        generate_kwargs={"num_beams": 2, "num_return_sequences": 2},
    )
    assert got == want


def test_image_and_text_object_is_one_user_turn(llava: Path, hf_pipe: Any, image_paths: list[Path]) -> None:  # noqa: F811
    pipe = taskhub.pipeline("image-text-to-text", str(llava))
    pixels = np.asarray(hf_load_image(str(image_paths[1])))
    got = pipe.run_items(
        [{"image": str(image_paths[0]), "text": "What is this?"}, {"images": [pixels], "text": "And this?"}],
        max_new_tokens=7,
    )
    answers = [
        hf_pipe(text=[user(image_paths[i], q)], max_new_tokens=7, return_full_text=False)[0]["generated_text"]
        for i, q in [(0, "What is this?"), (1, "And this?")]
    ]
    assert got == [
        [{"input_text": "What is this?", "generated_text": "What is this?" + answers[0]}],
        [{"input_text": "And this?", "generated_text": "And this?" + answers[1]}],
    ]


def test_prompt_ids_and_pixels_equal_the_processors(llava: Path, image_paths: list[Path]) -> None:  # noqa: F811
    pipe = taskhub.pipeline("image-text-to-text", str(llava))
    conversation = chats(image_paths)[3]
    (prompt,) = chat_inputs([conversation], ChatInputParams(), pipe.context)
    processor = transformers.AutoProcessor.from_pretrained(llava)
    loaded = [
        {
            "role": "user",
            "content": [{"type": "image", "image": hf_load_image(str(p))} for p in (image_paths[0], image_paths[3])]
            + [conversation[0]["content"][-1]],
        }
    ]
    want = processor.apply_chat_template(
        loaded, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert prompt.input_ids == want["input_ids"][0].tolist()
    assert prompt.input_ids.count(processor.image_token_id) == 2 * 16  # (32 / 8)^2 patches per image
    torch.testing.assert_close(prompt.image_inputs["pixel_values"], want["pixel_values"], atol=0, rtol=0)


def test_hf_backend_passes_a_vlms_processor_outputs_to_its_forward(llava: Path, image_paths: list[Path]) -> None:  # noqa: F811
    """Decoder-only HFBackend: batch.encoder_inputs reach the model as they are (pixel_values at prefill)."""
    processor = transformers.AutoProcessor.from_pretrained(llava)
    model = transformers.LlavaForConditionalGeneration.from_pretrained(llava).eval()
    prompts = ["<image>\nWhat is in this picture?", "<image>\nColour?"]
    images = [hf_load_image(str(p)) for p in image_paths[:2]]
    processor.tokenizer.padding_side = "left"
    encoded = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    unpadded = [ids[mask.bool()].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    batch = PromptBatch.left_padded(unpadded, PAD, model.device, {"pixel_values": encoded["pixel_values"]})
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, eos_token_id=EOS)
    got = [g.token_ids for (g,) in generate(HFBackend(model), batch, config)]
    want = model.generate(
        **encoded, max_new_tokens=6, min_new_tokens=6, do_sample=False, eos_token_id=EOS, pad_token_id=PAD
    )
    assert got == want[:, encoded["input_ids"].shape[1] :].tolist()
    swapped = PromptBatch.left_padded(unpadded, PAD, model.device, {"pixel_values": encoded["pixel_values"].flip(0)})
    assert [g.token_ids for (g,) in generate(HFBackend(model), swapped, config)] != got  # the pixels are read


def test_bad_inputs_and_models(multimodal_models: dict[str, Path], image_paths: list[Path], tmp_path: Path) -> None:  # noqa: F811
    pipe = taskhub.pipeline("image-text-to-text", str(multimodal_models["llava"]))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(BadInputError, match="corrupt.png"):
        pipe([user(corrupt, "What is this?")])
    with pytest.raises(BadInputError, match="no 'text'"):
        pipe.run_items([{"image": str(image_paths[0])}])
    with pytest.raises(BadInputError, match="unknown fields"):
        pipe.run_items([{"image": str(image_paths[0]), "txt": "typo"}])
    with pytest.raises(BadInputError, match="image part without an image"):
        pipe([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}])
    with pytest.raises(BadInputError, match="part 0"):
        pipe([{"role": "user", "content": [{"type": "video", "video": "x.mp4"}]}])
    with pytest.raises(ParamError, match="image-to-text"):
        taskhub.pipeline("image-text-to-text", str(multimodal_models["blip"]))([user(image_paths[0], "?")])


def test_chat_job_records_bad_items_and_answers_the_rest(
    llava: Path,
    hf_pipe: Any,
    image_paths: list[Path],
    tmp_path: Path,  # noqa: F811
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = chats(image_paths)
    records = [
        {"id": "a", "chat": good[0]},
        {"id": "bad-image", "chat": [user(corrupt, "What is this?")]},
        {"id": "b", "chat": good[1]},
        {"id": "no-content", "chat": [{"role": "user"}]},
        {"id": "c", "chat": good[3]},
    ]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    job = {
        "job": "chat",
        "task": "image-text-to-text",
        "model": str(llava),
        "params": {"max_new_tokens": 5},
        "inputs": {"jsonl": "chats.jsonl", "field": "chat", "id_field": "id"},
        "output": "out.jsonl",
        "batch_size": 2,
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    summary = taskhub.run_job(tmp_path / "job.yaml", quiet=True)
    assert (summary["done"], summary["failed"]) == (3, 2)
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert (
        out["bad-image"]["error"]["type"] == "BadInputError" and "corrupt.jpg" in out["bad-image"]["error"]["message"]
    )
    assert (
        out["no-content"]["error"]["type"] == "BadInputError" and "message 0" in out["no-content"]["error"]["message"]
    )
    for key, conversation in [("a", good[0]), ("b", good[1]), ("c", good[3])]:
        assert out[key]["error"] is None
        assert out[key]["output"] == hf_pipe(text=conversation, max_new_tokens=5)


def test_cli_answers_a_chat_file(
    llava: Path, hf_pipe: Any, image_paths: list[Path], tmp_path: Path, capsys: Any
) -> None:  # noqa: F811
    conversation = chats(image_paths)[0]
    (tmp_path / "chat.json").write_text(json.dumps(conversation))
    args = [
        "run",
        "image-text-to-text",
        str(tmp_path / "chat.json"),
        "--model",
        str(llava),
        "--param",
        "max_new_tokens=6",
        "--json",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == hf_pipe(text=conversation, max_new_tokens=6)
