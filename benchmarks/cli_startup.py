"""Start-up time of `nanogpt --help` and of a shell completion request, side by side with
`python -c "import torch"`: the CLI must answer in a small fraction of torch's import.

Each command runs as a whole process, rounds interleaved, after one warm-up run each (so
every side reads its bytecode caches, as it does for a user). Prints the median, the spread
and the ratio to `import torch`.

Usage: python benchmarks/cli_startup.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

NANOGPT = str(Path(sys.executable).with_name("nanogpt"))


def cases() -> dict[str, tuple[list[str], dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def completion(line: str) -> dict[str, str]:
        words = line.split(" ")
        return {
            **env,
            "_NANOGPT_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
        }

    return {
        'python -c "import torch"': ([sys.executable, "-c", "import torch"], env),
        "nanogpt --help": ([NANOGPT, "--help"], env),
        "nanogpt train --help": ([NANOGPT, "train", "--help"], env),
        "complete `nanogpt train --preset <TAB>`": (
            [NANOGPT],
            completion("nanogpt train --preset "),
        ),
        "complete `nanogpt <TAB>`": ([NANOGPT], completion("nanogpt ")),
        "nanogpt --version": ([NANOGPT, "--version"], env),
    }


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    todo = cases()
    times: dict[str, list[float]] = {name: [] for name in todo}
    for cmd, env in todo.values():
        timed(cmd, env)  # warm-up: bytecode caches, page cache
    for _ in range(args.rounds):
        for name, (cmd, env) in todo.items():
            times[name].append(timed(cmd, env))
    torch_median = statistics.median(times['python -c "import torch"'])
    import torch

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {date.today()}, "
        f"median of {args.rounds} rounds"
    )
    print("| command | median s | min-max s | vs import torch |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.3f} | {min(values):.3f}-{max(values):.3f} | "
            f"{median / torch_median:.1%} |"
        )


if __name__ == "__main__":
    main()
