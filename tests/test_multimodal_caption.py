"""image-to-text: captions equal the model's own generate(); pixels equal its processor; bad inputs fail clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from fixtures_multimodal import image_paths, multimodal_models  # noqa: F401
from taskhub_multimodal.caption import CaptionPromptParams, caption_inputs
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, GenerationConfig
from transformers.image_utils import load_image as hf_load_image

import taskhub
from taskhub.cli import main
from taskhub.errors import BadInputError, ParamError

CAPTIONERS = ["vit_gpt2", "blip"]
JOB = Path(__file__).resolve().parent.parent / "manifests" / "jobs" / "multimodal-caption.yaml"


def hf_captions(path: Path, images: list[Path], prompt: str | None = None, **generate: Any) -> list[list[str]]:
    """The model's own generate() on its own processor's pixels, decoded as HF's image-to-text pipeline did."""
    model = AutoModelForImageTextToText.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path, backend="pil")
    tokenizer = AutoTokenizer.from_pretrained(path)
    out = []
    for image in images:
        pixels = image_processor(images=hf_load_image(str(image)), return_tensors="pt").pixel_values
        kwargs = dict(generate)
        if prompt is not None:
            kwargs["input_ids"] = AutoProcessor.from_pretrained(path)(text=prompt, return_tensors="pt").input_ids
        sequences = model.generate(pixel_values=pixels, **kwargs)
        out.append([tokenizer.decode(s, skip_special_tokens=True) for s in sequences])
    return out


def texts(results: list[list[dict[str, str]]]) -> list[list[str]]:
    return [[r["generated_text"] for r in result] for result in results]


@pytest.mark.parametrize("name", CAPTIONERS)
def test_pixel_values_equal_the_models_processor(
    name: str, multimodal_models: dict[str, Path], image_paths: list[Path]
) -> None:  # noqa: F811
    pipe = taskhub.pipeline("image-to-text", str(multimodal_models[name]))
    images = [hf_load_image(str(p)) for p in image_paths]
    prepared = caption_inputs(images, CaptionPromptParams(), pipe.context)
    processor = AutoImageProcessor.from_pretrained(multimodal_models[name], backend="pil")
    want = processor(images=images, return_tensors="pt").pixel_values
    torch.testing.assert_close(torch.stack([p.pixel_values for p in prepared]), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", CAPTIONERS)
@pytest.mark.parametrize(
    "generate", [{"max_new_tokens": 9}, {"max_new_tokens": 7, "num_beams": 2}], ids=["greedy", "beams"]
)
def test_batched_captions_equal_generate_by_hand(
    name: str,
    generate: dict[str, int],
    multimodal_models: dict[str, Path],
    image_paths: list[Path],  # noqa: F811
) -> None:
    got = taskhub.pipeline("image-to-text", str(multimodal_models[name]))([str(p) for p in image_paths], **generate)
    assert texts(got) == hf_captions(multimodal_models[name], image_paths, **generate)
    assert len(set(t[0] for t in texts(got))) > 1  # the images lead to different captions


def test_blip_prompt_starts_the_caption(multimodal_models: dict[str, Path], image_paths: list[Path]) -> None:  # noqa: F811
    path = multimodal_models["blip"]
    got = taskhub.run_task(
        "image-to-text", [str(p) for p in image_paths], model=str(path), prompt="a photo of", max_new_tokens=6
    )
    want = hf_captions(path, image_paths, prompt="a photo of", max_new_tokens=6)
    assert texts(got) == want
    assert all(t[0].startswith("a photo of") for t in texts(got))


def test_num_return_sequences_are_the_beams_best_first(
    multimodal_models: dict[str, Path], image_paths: list[Path]
) -> None:  # noqa: F811
    path = multimodal_models["vit_gpt2"]
    got = taskhub.pipeline("image-to-text", str(path))(
        str(image_paths[0]), num_beams=3, num_return_sequences=2, max_new_tokens=6
    )
    assert [r["generated_text"] for r in got] == hf_captions(
        path, image_paths[:1], num_beams=3, num_return_sequences=2, max_new_tokens=6
    )[0]


def test_stop_string_cuts_the_greedy_caption(multimodal_models: dict[str, Path], image_paths: list[Path]) -> None:  # noqa: F811
    pipe = taskhub.pipeline("image-to-text", str(multimodal_models["vit_gpt2"]))
    full = pipe(str(image_paths[1]), max_new_tokens=9)[0]["generated_text"]
    words = full.split()
    stop = words[2]
    assert pipe(str(image_paths[1]), max_new_tokens=9, stop=stop)[0]["generated_text"] == full[: full.index(stop)]


def test_seeded_sampling_repeats_and_follows_the_seed(
    multimodal_models: dict[str, Path], image_paths: list[Path]
) -> None:  # noqa: F811
    pipe = taskhub.pipeline("image-to-text", str(multimodal_models["blip"]))
    draws = [texts(pipe([str(p) for p in image_paths], do_sample=True, seed=s, max_new_tokens=8)) for s in (1, 1, 2)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_bad_inputs_and_params(multimodal_models: dict[str, Path], image_paths: list[Path], tmp_path: Path) -> None:  # noqa: F811
    good = str(image_paths[0])
    pipe = taskhub.pipeline("image-to-text", str(multimodal_models["vit_gpt2"]))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(BadInputError, match="corrupt.jpg"):
        pipe(str(corrupt))
    with pytest.raises(BadInputError, match="does not exist"):
        pipe(str(tmp_path / "missing.png"))
    with pytest.raises(ParamError, match="Valid parameters"):
        pipe(good, temprature=0.5)
    with pytest.raises(ParamError, match="image-text-to-text"):
        taskhub.pipeline("image-to-text", str(multimodal_models["llava"]))(good)


def test_caption_job_records_a_corrupt_image_and_captions_the_rest(
    multimodal_models: dict[str, Path],
    image_paths: list[Path],
    tmp_path: Path,  # noqa: F811
) -> None:
    """The shipped job manifest, with the tiny model and a folder holding one corrupt file."""
    job = yaml.safe_load(JOB.read_text())
    folder = tmp_path / "images"
    folder.mkdir()
    for path in image_paths:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    job.update(model=str(multimodal_models["vit_gpt2"]), output=str(tmp_path / "out.jsonl"), batch_size=2)
    job["params"]["max_new_tokens"] = 6  # the manifest's other params (beam search) stay
    job["inputs"]["files"] = str(folder / "*.*g")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    summary = taskhub.run_job(tmp_path / "job.yaml", quiet=True)
    assert (summary["done"], summary["failed"]) == (len(image_paths), 1)
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    bad = records.pop("broken.jpg")
    assert bad["output"] is None and bad["error"]["type"] == "BadInputError" and "broken.jpg" in bad["error"]["message"]
    names = sorted(records)
    want = hf_captions(multimodal_models["vit_gpt2"], [folder / n for n in names], **job["params"])
    assert [texts([records[n]["output"]])[0] for n in names] == want


def test_cli_captions_an_image_file(multimodal_models: dict[str, Path], image_paths: list[Path], capsys: Any) -> None:  # noqa: F811
    path = str(multimodal_models["blip"])
    args = ["run", "image-to-text", str(image_paths[1]), "--model", path, "--param", "max_new_tokens=6", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == hf_captions_json(
        multimodal_models["blip"], image_paths[1], max_new_tokens=6
    )


def hf_captions_json(path: Path, image: Path, **generate: Any) -> list[dict[str, str]]:
    return [{"generated_text": text} for text in hf_captions(path, [image], **generate)[0]]


def test_the_checkpoints_generation_config_applies_unless_the_caller_overrides_it(
    multimodal_models: dict[str, Path],
    image_paths: list[Path],
    tmp_path: Path,  # noqa: F811
) -> None:
    """generate() reads num_beams and max_length (prompt included) from generation_config; so does taskhub."""
    path = tmp_path / "beamy"
    shutil.copytree(multimodal_models["vit_gpt2"], path)
    config = GenerationConfig.from_pretrained(path)
    config.num_beams, config.max_length = 2, 6
    config.save_pretrained(path)
    pipe = taskhub.pipeline("image-to-text", str(path))
    images = [str(p) for p in image_paths]
    assert texts(pipe(images)) == hf_captions(path, image_paths)
    assert texts(pipe(images, num_beams=1, max_new_tokens=8)) == hf_captions(
        path, image_paths, num_beams=1, max_new_tokens=8
    )
    assert texts(pipe(images)) != texts(pipe(images, num_beams=1, max_new_tokens=8))
