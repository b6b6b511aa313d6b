"""Tokenization throughput and peak memory of `nanogpt prepare` against two baselines.

Each method turns the same JSONL corpus (one document per line, GPT-2 BPE, <|endoftext|>
after every document) into train.bin / val.bin, in a fresh process whose peak resident
memory (the process and all its workers, sampled every 10 ms) is recorded:

- plain:        a Python loop over tiktoken's encode_ordinary, tokens kept in a list and
                written at the end (what a hand-written script does);
- datasets.map: nanoGPT's openwebtext/prepare.py recipe (load_dataset("json"),
                train_test_split(0.0005, seed 2357), map(num_proc), 1024-shard memmap write);
- nanogpt:      `nanogpt prepare text` (streaming, worker processes).

The corpus is the input repeated 1x and 4x: memory that grows with the corpus shows up as a
larger peak at 4x. Needs GPT-2's BPE files in tiktoken's cache (TIKTOKEN_CACHE_DIR).

Usage:
  python benchmarks/prepare_throughput.py [--input articles.jsonl] [--scales 1 4] [--num-proc N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "enwiki-sample" / "articles.jsonl"

PLAIN = """
import json, sys, numpy as np, tiktoken
enc = tiktoken.get_encoding("gpt2")
ids = []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        ids.extend(enc.encode_ordinary(json.loads(line)["text"]))
        ids.append(enc.eot_token)
np.array(ids, dtype=np.uint16).tofile(sys.argv[2] + "/train.bin")
print(len(ids))
"""

# nanoGPT's data/openwebtext/prepare.py, with the local JSONL in place of the hub dataset.
DATASETS_MAP = """
import os, sys, numpy as np, tiktoken
from datasets import load_dataset
num_proc = int(sys.argv[3])
enc = tiktoken.get_encoding("gpt2")
dataset = load_dataset("json", data_files=sys.argv[1], num_proc=num_proc)
split_dataset = dataset["train"].train_test_split(test_size=0.0005, seed=2357, shuffle=True)
split_dataset["val"] = split_dataset.pop("test")
def process(example):
    ids = enc.encode_ordinary(example["text"])
    ids.append(enc.eot_token)
    return {"ids": ids, "len": len(ids)}
tokenized = split_dataset.map(process, remove_columns=["text"], desc="tokenizing",
                              num_proc=num_proc)
total = 0
for split, dset in tokenized.items():
    arr_len = np.sum(dset["len"], dtype=np.uint64)
    filename = os.path.join(sys.argv[2], f"{split}.bin")
    arr = np.memmap(filename, dtype=np.uint16, mode="w+", shape=(arr_len,))
    total_batches = min(1024, len(dset))
    idx = 0
    for batch_idx in range(total_batches):
        batch = dset.shard(num_shards=total_batches, index=batch_idx, contiguous=True)
        batch = batch.with_format("numpy")
        arr_batch = np.concatenate(batch["ids"])
        arr[idx : idx + len(arr_batch)] = arr_batch
        idx += len(arr_batch)
    arr.flush()
    total += int(arr_len)
print(total)
"""

NANOGPT = """
import sys
sys.path.insert(0, sys.argv[4])
from nanogpt_cli.data.prepare import prepare_text
r = prepare_text([sys.argv[1]], name="bench", data_dir=sys.argv[2], val_fraction=0.02,
                 num_proc=int(sys.argv[3]), force=True)
print(r.train_tokens + r.val_tokens)
"""

METHODS = {"plain": PLAIN, "datasets.map": DATASETS_MAP, "nanogpt": NANOGPT}


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run(method: str, corpus: Path, num_proc: int, work: Path) -> tuple[int, float, int]:
    """Tokens written, wall seconds, peak resident bytes."""
    out = work / method.replace(".", "-")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-cache" / method)}
    args = [sys.executable, "-c", METHODS[method], str(corpus), str(out), str(num_proc), str(ROOT)]
    start = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(child.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{method} failed:\n{stderr.decode()[-2000:]}")
    return int(stdout.decode().split()[-1]), seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    if not args.input.is_file():
        raise SystemExit(f"{args.input} not found; pass --input FILE.jsonl")
    print(
        f"# prepare throughput, {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, num_proc {args.num_proc}"
    )
    print("| corpus | method | tokens | seconds | tokens/s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|")
    raw = args.input.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for scale in args.scales:
            corpus = work / f"corpus-{scale}x.jsonl"
            corpus.write_bytes(raw * scale)
            docs = sum(1 for _ in corpus.open("rb"))
            for method in args.methods:
                tokens, seconds, peak = run(method, corpus, args.num_proc, work / f"{scale}x")
                print(
                    f"| {scale}x ({docs} docs, {corpus.stat().st_size / 1e6:.1f} MB) | {method} "
                    f"| {tokens:,} | {seconds:.2f} | {tokens / seconds:,.0f} | {peak / 1e6:.0f} |",
                    flush=True,
                )
    print(json.dumps({"command": " ".join(sys.argv)}))


if __name__ == "__main__":
    main()
