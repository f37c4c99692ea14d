"""image-classification throughput: taskhub vs the transformers pipeline, same model, images and batch size.

    python benchmarks/vision.py [--images 256] [--batch-size 32] [--device cpu] [--min-side 480] [--max-side 2400]
                                [--repeats 3]

A ViT-base-shaped model (random weights, real shapes: 86M parameters, 224x224, 1000 labels) and
its ViT image processor (PIL backend) are saved to a temp folder; `--images` JPEGs of varied
sizes are cut from the sample photos. Both pipelines get the same paths and batch size, after
one warm-up batch each, in 4 slices, each run --repeats times by both sides in alternating order, each side's
best time per slice counted (machine load drifts hit both alike; the best filters bursts of other tenants).
Reported: images/s end to end, the ratio, and where the time goes (the input path, decode +
preprocess, alone for both, best of 3 alternating rounds; the model forward alone, transformers'
model and the one taskhub runs: the fused ViT encoder on CPU), plus the largest pixel_values
difference between taskhub's preprocessing and the HF processor, and the agreement of the results.

It also prints the CPU, its extensions (AMX, AVX512-BF16, VNNI), torch / oneDNN versions and the load
average; a roofline (the fused forward's FLOPs from the model's shapes over its time, as a fraction of
plain torch.mm at the same shapes); and the fused encoder in bf16 (dtype="bfloat16") and dynamic int8
(model option quantize: int8): forward images/s and top-1 agreement / min logit cosine against the fp32
transformers model on the benchmark's own images (targets: top-1 >= 99%, cosine >= 0.999).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from roofline import encoder_flops, gemm_flops_per_s, linear_shapes, machine_lines, roofline_lines

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples" / "images").glob("*.*g"))


def build_model(folder: Path) -> Path:
    """ViT-base/16 at 224 with random weights, saved with safetensors and its PIL-backend processor."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    labels = {i: f"class_{i}" for i in range(1000)}
    config = ViTConfig(num_labels=1000, id2label=labels, label2id={v: k for k, v in labels.items()})
    ViTForImageClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    ViTImageProcessorPil().save_pretrained(folder)
    return folder


def make_images(folder: Path, count: int, min_side: int, max_side: int, seed: int) -> list[str]:
    """`count` JPEGs: random crops of the samples resized so the long side is in [min_side, max_side]."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in SAMPLES]
    paths = []
    for n in range(count):
        source = sources[n % len(sources)]
        w, h = source.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        long_side = int(rng.integers(min_side, max_side + 1))
        aspect = rng.uniform(0.6, 1.8)  # width / height, portrait to wide
        size = (
            (long_side, max(16, int(long_side / aspect)))
            if aspect >= 1
            else (max(16, int(long_side * aspect)), long_side)
        )
        image = source.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"img{n:04d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def timed(func: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def compare_end_to_end(
    hf: Any, ours: Any, paths: list[str], batch_size: int, rounds: int = 4, repeats: int = 3
) -> tuple[Any, ...]:
    """Both pipelines over all `paths`, in `rounds` slices, each slice run `repeats` times by both sides in
    alternating order; each side keeps its best time per slice (this shared machine's other tenants slow a
    run by up to 2x for seconds at a time, AMX work most), and its results from the first run."""
    hf_results: list[Any] = []
    our_results: list[Any] = []
    hf_seconds = our_seconds = 0.0
    step = -(-len(paths) // rounds)
    for start in range(0, len(paths), step):
        part = paths[start : start + step]
        best = {"hf": float("inf"), "ours": float("inf")}
        for r in range(repeats):
            runs = [("hf", hf), ("ours", ours)] if r % 2 == 0 else [("ours", ours), ("hf", hf)]
            for name, pipe in runs:
                results, seconds = timed(lambda pipe=pipe, part=part: pipe(part, batch_size=batch_size))
                best[name] = min(best[name], seconds)
                if r == 0:
                    (hf_results if name == "hf" else our_results).extend(results)
        hf_seconds += best["hf"]
        our_seconds += best["ours"]
    return hf_results, our_results, hf_seconds, our_seconds


def input_path_seconds(
    paths: list[str], hf_processor: Any, taskhub_pipe: Any, batch_size: int, rounds: int = 3
) -> dict[str, float]:
    """Decode + preprocess only, as each pipeline does it (HF: per image, in the calling thread).

    Cheap next to the model, so it alternates `rounds` times and keeps each side's best time.
    """
    from taskhub_vision.images import load_images
    from taskhub_vision.preprocess import preprocess
    from transformers.image_utils import load_image as hf_load_image

    from taskhub.registry import NoParams

    def hf() -> None:
        for path in paths:
            hf_processor(images=hf_load_image(path), return_tensors="pt")

    def ours() -> None:
        for start in range(0, len(paths), batch_size):
            images = load_images(paths[start : start + batch_size], NoParams(), taskhub_pipe.context)
            preprocess(images, NoParams(), taskhub_pipe.context)

    times = [(timed(hf)[1], timed(ours)[1]) for _ in range(rounds)]
    return {"hf": min(t[0] for t in times), "taskhub": min(t[1] for t in times)}


def pixel_difference(paths: list[str], hf_processor: Any, taskhub_pipe: Any) -> float:
    """Largest |taskhub pixel_values - HF processor pixel_values| over `paths`."""
    from taskhub_vision import load_image
    from taskhub_vision.preprocess import preprocess

    from taskhub.registry import NoParams

    images = [load_image(p) for p in paths]
    ours = preprocess(images, NoParams(), taskhub_pipe.context)
    return max(
        (item.tensors["pixel_values"] - hf_processor(images=image, return_tensors="pt")["pixel_values"][0])
        .abs()
        .max()
        .item()
        for image, item in zip(images, ours)
    )


def forward_images_per_s(
    model: Any, batch_size: int, device: str, batches: int = 2, dtype: torch.dtype = torch.float32
) -> float:
    """The model alone on random pixel batches: the ceiling both pipelines share."""
    pixels = torch.randn(batch_size, 3, 224, 224, device=device, dtype=dtype)
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(batches):
            model(pixel_values=pixels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return batches * batch_size / (time.perf_counter() - start)


def reduced_precision_rows(model_dir: Path, paths: list[str], processor: Any, batch_size: int) -> list[str]:
    """The fused ViT with IEEE fp32 products (matmul_precision highest), in bf16 and in dynamic int8 against
    the fp32 transformers model on real pixels."""
    from taskhub_vision.loading import load_vision_model
    from transformers import ViTForImageClassification

    from taskhub.models import ModelSource

    reference = ViTForImageClassification.from_pretrained(model_dir).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = torch.cat([reference(pixel_values=part).logits for part in pixels.split(batch_size)])
    rows = []
    variants = (
        ("fp32 highest", None, {"matmul_precision": "highest"}),
        ("bf16", torch.bfloat16, {}),
        ("int8", None, {"quantize": "int8"}),
    )
    for name, dtype, options in variants:
        source = ModelSource("vit", model_dir, dtype=dtype, options={"head": "image-classification", **options})
        encoder = load_vision_model(source).encoder
        with torch.inference_mode():
            logits = torch.cat(
                [encoder(pixel_values=p.to(encoder.model.dtype)).logits.float() for p in pixels.split(batch_size)]
            )
        top1 = (logits.argmax(-1) == expected.argmax(-1)).float().mean().item()
        cosine = torch.nn.functional.cosine_similarity(logits, expected, dim=-1).min().item()
        speed = forward_images_per_s(encoder, batch_size, "cpu", dtype=encoder.model.dtype)
        rows.append(
            f"  fused {name:<12}: forward {speed:8.2f} images/s; vs fp32 transformers on {len(paths)} images: "
            f"top-1 agreement {top1:.1%}, min logit cosine {cosine:.5f}"
        )
    return rows


def vit_roofline(runner: Any, batch_size: int, rounds: int = 2) -> list[str]:
    """Fused forward FLOPs (encoder layers at 1 + patches tokens) per second against torch.mm at ViT
    shapes, the two measured in turns (`rounds`, best of each) so load changes hit both alike."""
    config = runner.model.config
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    flops_per_image = encoder_flops(config.hidden_size, config.intermediate_size, config.num_hidden_layers, [tokens])
    shapes = linear_shapes(config.hidden_size, config.intermediate_size)
    rows = tokens * batch_size
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rate, peaks = 0.0, dict.fromkeys(dtypes, 0.0)
    for _ in range(rounds):
        rate = max(rate, forward_images_per_s(runner, batch_size, "cpu", batches=1))
        for name, dtype in dtypes.items():
            peaks[name] = max(peaks[name], gemm_flops_per_s(shapes, rows, dtype, repeats=2))
    return roofline_lines(f"fp32 fused forward ({rows} rows/batch)", flops_per_image, 1 / rate, peaks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-side", type=int, default=480, help="shortest long side of the generated photos")
    parser.add_argument("--max-side", type=int, default=2400, help="longest long side of the generated photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    parser.add_argument("--no-reduced", action="store_true", help="skip the bf16 and int8 rows")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each end-to-end slice; the best counts")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from transformers import AutoImageProcessor
    from transformers import pipeline as hf_pipeline

    import taskhub

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "vit-base")
        image_dir = Path(tmp) / "images"
        image_dir.mkdir()
        paths = make_images(image_dir, args.images, args.min_side, args.max_side, args.seed)
        megapixels = [Image.open(p).width * Image.open(p).height / 1e6 for p in paths]

        processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
        hf = hf_pipeline("image-classification", model=str(model_dir), image_processor=processor, device=args.device)
        ours = taskhub.pipeline("image-classification", str(model_dir), device=args.device)
        warm = paths[: args.batch_size]
        hf(warm, batch_size=args.batch_size)
        ours(warm, batch_size=args.batch_size)

        hf_results, our_results, hf_seconds, our_seconds = compare_end_to_end(
            hf, ours, paths, args.batch_size, repeats=args.repeats
        )

        inputs = input_path_seconds(paths, processor, ours, args.batch_size)
        forward = forward_images_per_s(ours.model.runner, args.batch_size, args.device)
        hf_forward = forward_images_per_s(hf.model, args.batch_size, args.device)
        pixel_diff = pixel_difference(paths[:32], processor, ours)
        roofline = vit_roofline(ours.model.encoder, args.batch_size) if ours.model.encoder is not None else []
        reduced = [] if args.no_reduced else reduced_precision_rows(model_dir, paths[:64], processor, args.batch_size)

    top1 = sum(a[0]["label"] == b[0]["label"] for a, b in zip(our_results, hf_results)) / len(paths)
    score_diff = max(abs(x["score"] - y["score"]) for a, b in zip(our_results, hf_results) for x, y in zip(a, b))
    n = len(paths)
    report = {
        "images": n,
        "batch_size": args.batch_size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "megapixels_mean": round(float(np.mean(megapixels)), 2),
        "megapixels_range": [round(min(megapixels), 2), round(max(megapixels), 2)],
        "hf_images_per_s": round(n / hf_seconds, 2),
        "taskhub_images_per_s": round(n / our_seconds, 2),
        "speedup": round(hf_seconds / our_seconds, 2),
        "input_path_hf_images_per_s": round(n / inputs["hf"], 2),
        "input_path_taskhub_images_per_s": round(n / inputs["taskhub"], 2),
        "input_path_speedup": round(inputs["hf"] / inputs["taskhub"], 2),
        "forward_only_images_per_s": round(forward, 2),
        "hf_forward_only_images_per_s": round(hf_forward, 2),
        "pixel_values_max_abs_diff": pixel_diff,
        "top1_agreement": top1,
        "score_max_abs_diff": score_diff,
        "machine": machine_lines(),
        "roofline": roofline,
        "reduced_precision": reduced,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print("\n".join(machine_lines()))
    print(
        f"image-classification, {n} JPEGs ({report['megapixels_mean']} MP mean, {report['megapixels_range']} MP), "
        f"ViT-base/16 random weights, batch {args.batch_size}, device {args.device}, "
        f"{report['torch_threads']} torch threads, {report['cpus']} CPUs"
    )
    print(f"  transformers pipeline : {report['hf_images_per_s']:8.2f} images/s")
    print(
        f"  taskhub               : {report['taskhub_images_per_s']:8.2f} images/s   speedup {report['speedup']:.2f}x"
    )
    print(
        f"  input path only (decode + preprocess): HF {report['input_path_hf_images_per_s']:.2f} images/s, "
        f"taskhub {report['input_path_taskhub_images_per_s']:.2f} images/s   speedup {report['input_path_speedup']:.2f}x"
    )
    print(
        f"  model forward only    : HF {report['hf_forward_only_images_per_s']:.2f} images/s, "
        f"taskhub {report['forward_only_images_per_s']:.2f} images/s (each side's ceiling)"
    )
    print(
        f"  pixel_values max |taskhub - HF processor| = {pixel_diff:.3g}; top-1 agreement {top1:.0%}; "
        f"score max |diff| = {score_diff:.2g}"
    )
    print("\n".join(reduced + roofline))
    met = report["speedup"] >= 1.5 and bool(roofline) and float(roofline[0].split("GFLOP/s; ")[1].split("%")[0]) >= 70
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"targets {'met' if met else 'NOT met'} (>= 1.5x the transformers pipeline, >= 70% of fp32 torch.mm); load {load}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
