"""Start-up time of the commands that load no model, next to `python -c pass`.

    python benchmarks/startup.py [--repeats 5] [--target 1.0]

Each command runs in a fresh interpreter (`--repeats` times, interleaved, best run kept), the
way a user types it: `import taskhub`, `taskhub --help`, `taskhub tasks`, `taskhub plugins`,
`taskhub stages`, `taskhub manifest validate` (every built-in task manifest). For each, it also
reports whether torch or transformers got imported (from a separate run with `-X importtime`),
since their import is most of a slow start. Printed: CPU model, load average, the best wall time
of each command, its ratio to `python -c pass`, and whether it meets `--target` seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "taskhub.cli"]
MANIFESTS = sorted(str(p) for p in (ROOT / "manifests" / "tasks").glob("*/*.yaml"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import taskhub": [sys.executable, "-c", "import taskhub"],
    "taskhub --help": [*CLI, "--help"],
    "taskhub tasks": [*CLI, "tasks"],
    "taskhub plugins": [*CLI, "plugins"],
    "taskhub stages": [*CLI, "stages"],
    "taskhub manifest validate": [*CLI, "manifest", "validate", *MANIFESTS],
}
HEAVY = ("torch", "transformers")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def heavy_imports(argv: list[str]) -> list[str]:
    """Which of torch/transformers the command imports (from -X importtime's report)."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], cwd=ROOT, capture_output=True, text=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in imported]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target", type=float, default=1.0, help="seconds each command should stay under")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    best = {name: float("inf") for name in COMMANDS}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every command alike
        for name, argv in COMMANDS.items():
            best[name] = min(best[name], run_once(argv))
    base = best["python -c pass"]
    print(f"\n{'command':<28} {'best s':>8} {'x pass':>8}  heavy imports      target")
    for name, argv in COMMANDS.items():
        heavy = ", ".join(heavy_imports(argv)) or "none"
        verdict = "" if name == "python -c pass" else ("ok" if best[name] < args.target else "OVER")
        print(f"{name:<28} {best[name]:8.3f} {best[name] / base:8.1f}  {heavy:<18} {verdict}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; best of {args.repeats}")


if __name__ == "__main__":
    main()
