"""Batch jobs: the local executor's overhead over a plain loop, and its memory as the input grows 100x.

    python benchmarks/batch.py [--items 2000] [--batch-size 32] [--repeats 3] [--threads 1]
                               [--memory-lines 2000 200000] [--skip-overhead] [--skip-memory]

Overhead. `--items` short texts go through feature-extraction on the packaged all-MiniLM-L6-v2:
  - loop: a plain Python loop calling the same Pipeline on slices of `--batch-size` texts held in
    memory, results discarded (the anchor the issue names);
  - loop+write: the same loop writing each result as a JSON line (no fsync), what a hand-written
    job minimally does;
  - executor: `run_job` over a JSONL file with the same batch size: the streaming duplicate-id
    scan, lazy reading, per-item records with metrics, progress accounting, and JSON encoding +
    append + flush + fsync per batch on the writer thread (overlapping the next batch).
The model is loaded before timing (the executor's Pipeline reuses it from the model cache).
Runs alternate loop / loop+write / executor `--repeats` times; each reports its median and
fastest run. Overhead = executor / loop - 1 of the median wall times (robust to a run that other
work on the machine slowed or briefly spared), target <= 10%. Printed next to it: the CPU-time ratio (process_time of the same runs: counts
the writer thread's JSON encoding, not fsync waits), and an in-run view that needs no second
run: within each executor run, the wall time outside the batch calls (scan, reading, records,
handing batches to the writer thread) over the time inside them (the sum of the records'
`metrics.seconds`). The writer thread works while the batch calls run, so the in-run view
shows what the main loop adds, not the cost of writing.

Memory. A child process per size runs a whole job over a JSONL input of N lines (string ids in
`id_field`, so the duplicate-id scan holds one 64-bit hash per line) through a model-free task
registered by this script (`bench-length`: characters and words per text), so that 200,000 items
finish in seconds; every line is read, processed and written. Reported: each child's peak
resident set (ru_maxrss, which includes the interpreter and the torch import every taskhub
process pays), the ratio (target <= 1.2x) and the growth per extra input line; and, because
start-up can set that peak, the job's own peak: the high-water mark (VmHWM, reset through
/proc/self/clear_refs just before run_job, after the plugins are imported) above the resident
set at that moment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

WORDS = "river lamp bread comet harbour valley library winter garden signal market forest".split()

LENGTH_TASK = """\
task: bench-length
modality: text
input: text
model_stage: {stage: bench.length}
"""


def text(n: int) -> str:
    """A short sentence, different for every n (8-14 words)."""
    return " ".join(WORDS[(n * 7 + k * 5) % len(WORDS)] for k in range(8 + n % 7)) + f" number {n}."


def write_inputs(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc-{i:07d}", "text": text(i)}) + "\n")
    return path


def write_job(folder: Path, task: str, inputs: Path, batch_size: int) -> Path:
    job = folder / f"{task}.yaml"
    job.write_text(
        f"job: bench\ntask: {task}\ninputs: {{jsonl: {inputs}, field: text, id_field: id}}\n"
        f"output: {folder / (task + '.jsonl')}\nbatch_size: {batch_size}\n"
    )
    return job


def overhead(items: int, batch_size: int, repeats: int) -> dict[str, Any]:
    import taskhub

    texts = [text(i) for i in range(items)]
    pipe = taskhub.pipeline("feature-extraction")
    pipe(texts[:batch_size])  # warm-up
    times: dict[str, list[float]] = {"loop": [], "loop+write": [], "executor": []}
    cpu_times: dict[str, list[float]] = {name: [] for name in times}
    outside: list[float] = []  # per executor run: time outside the batch calls / time inside them
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = write_job(folder, "feature-extraction", write_inputs(folder / "in.jsonl", items), batch_size)

        def loop() -> None:
            for i in range(0, items, batch_size):
                pipe(texts[i : i + batch_size])

        def loop_write() -> None:
            with open(folder / "loop.jsonl", "w", encoding="utf-8") as f:
                for i in range(0, items, batch_size):
                    for result in pipe(texts[i : i + batch_size]):
                        f.write(json.dumps(result) + "\n")

        def executor() -> None:
            wall = time.perf_counter()
            summary = taskhub.run_job(job, resume=False, quiet=True)
            wall = time.perf_counter() - wall
            assert summary["done"] == items, summary
            with open(folder / "feature-extraction.jsonl", encoding="utf-8") as f:
                inside = sum(json.loads(line)["metrics"]["seconds"] for line in f)
            outside.append((wall - inside) / inside)

        runs = {"loop": loop, "loop+write": loop_write, "executor": executor}
        for _ in range(repeats):
            for name, run in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                times[name].append(time.perf_counter() - wall)
                cpu_times[name].append(time.process_time() - cpu)
    best = {name: min(runs) for name, runs in times.items()}
    median = {name: statistics.median(runs) for name, runs in times.items()}
    best_cpu = {name: min(runs) for name, runs in cpu_times.items()}
    return {
        "items": items,
        "batch_size": batch_size,
        "runs": times,
        "best": best,
        "median": median,
        "best_cpu": best_cpu,
        "outside": outside,
    }


def memory_child(lines: int, batch_size: int) -> None:
    """Run the model-free job over `lines` inputs; print records written and this process's peak RSS."""
    from pydantic import BaseModel, ConfigDict

    import taskhub
    from taskhub import hookimpl

    class NoParams(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def length(items: list[str], params: NoParams, ctx: Any) -> list[dict[str, int]]:
        return [{"chars": len(t), "words": len(t.split())} for t in items]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tasks").mkdir()
        (folder / "tasks" / "bench-length.yaml").write_text(LENGTH_TASK)

        class Bench:
            @hookimpl
            def register_stages(self, register: Any) -> None:
                register("bench.length", length, NoParams)

            @hookimpl
            def register_manifest_dirs(self, register: Any) -> None:
                register(folder / "tasks")

        taskhub.register_plugin(Bench(), "bench")
        job = write_job(folder, "bench-length", write_inputs(folder / "in.jsonl", lines), batch_size)
        taskhub.get_registry()  # plugin imports happen here, not inside the measured job
        before = _status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        start = time.perf_counter()
        summary = taskhub.run_job(job, quiet=True)
        seconds = time.perf_counter() - start
        job_peak = _status_mib("VmHWM") - before
        with open(folder / "bench-length.jsonl", "rb") as f:
            records = sum(1 for _ in f)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "lines": lines,
                "records": records,
                "done": summary["done"],
                "seconds": seconds,
                "peak_mib": peak_kib / 1024,
                "job_peak_mib": job_peak,
            }
        )
    )


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def memory(sizes: list[int], batch_size: int) -> list[dict[str, Any]]:
    results = []
    for lines in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(lines), "--batch-size", str(batch_size)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timing on a shared machine)")
    parser.add_argument("--memory-lines", type=int, nargs="+", default=[2000, 200000])
    parser.add_argument("--memory-batch-size", type=int, default=256)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_child:
        memory_child(args.memory_child, args.batch_size)
        return
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    if not args.skip_overhead:
        r = overhead(args.items, args.batch_size, args.repeats)
        best, median = r["best"], r["median"]
        print(
            f"\noverhead: {r['items']} texts, feature-extraction (all-MiniLM-L6-v2), batch size {r['batch_size']}, {args.repeats} runs each"
        )
        for name in ("loop", "loop+write", "executor"):
            runs = ", ".join(f"{t:.2f}" for t in r["runs"][name])
            print(
                f"  {name:<11} median {median[name]:6.2f} s ({r['items'] / median[name]:6.1f} items/s), best {best[name]:6.2f} s,"
                f" cpu {r['best_cpu'][name]:5.2f} s   (runs: {runs})"
            )
        ratio = median["executor"] / median["loop"] - 1
        shares = ", ".join(f"{x:+.1%}" for x in r["outside"])
        print(f"  executor vs loop, best runs:       {best['executor'] / best['loop'] - 1:+.1%}")
        print(f"  executor vs loop+write, medians:   {median['executor'] / median['loop+write'] - 1:+.1%}")
        print(f"  executor vs loop, cpu time (best): {r['best_cpu']['executor'] / r['best_cpu']['loop'] - 1:+.1%}")
        print(
            f"  in-run, outside / inside the batch calls: median {statistics.median(r['outside']):+.1%}  (runs: {shares})"
        )
        print(
            f"  executor overhead vs loop (median wall): {ratio:+.1%}  (target <= +10%: {'met' if ratio <= 0.10 else 'NOT met'})"
        )
    if not args.skip_memory:
        rows = memory(args.memory_lines, args.memory_batch_size)
        print(
            f"\nmemory: whole job over N JSONL lines, model-free task, batch size {args.memory_batch_size}, one child process each"
        )
        for row in rows:
            assert row["records"] == row["done"] == row["lines"], row
            print(
                f"  {row['lines']:>8} lines: peak RSS {row['peak_mib']:7.1f} MiB, job's own peak +{row['job_peak_mib']:5.1f} MiB,"
                f" {row['seconds']:6.1f} s, {row['records']} records"
            )
        small, big = rows[0], rows[-1]
        ratio = big["peak_mib"] / small["peak_mib"]
        per_line = (big["peak_mib"] - small["peak_mib"]) * 2**20 / max(big["lines"] - small["lines"], 1)
        print(
            f"  ratio {ratio:.3f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}), growth {per_line:.0f} bytes per extra line"
        )


if __name__ == "__main__":
    main()
