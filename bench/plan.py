"""Benchmark: how fast a plan answers at any size, and how fast the pins it defers are made later.

- dry run: `packager package --dry-run` of a Llama-3.1-405B-shaped base (126 layers, 811 GB of bf16 weights as a
  sparse file: real headers, no disk) in the shared layout on --device cuda, from a cold page cache (the kernel's
  caches dropped where this process may), as a separate process: the whole command, imports included. Issue 23's
  target: under 30 s; before, the plan hashed the whole base first (~10 minutes on one core).
- pinning: sha256 of N real files of random bytes, packager's `sha256_files` (every core) against `sha256sum` of
  the same files (one core), warm page cache; the throughput in GB/s, and the ratio.

    python bench/plan.py [--files 4] [--file-mb 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from packager.io.hashing import sha256_files  # noqa: E402
from tests.sparse_models import LLAMA3, save_lora_by_hand, save_sparse_llama  # noqa: E402


def cpu_model() -> str:
    """The CPU, as every figure is printed with."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores, {platform.machine()})"
    return platform.processor()


def drop_caches() -> bool:
    """Drop the page, dentry and inode caches (root only); whether it could."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def dry_run(work: Path, repeats: int) -> None:
    hidden, intermediate, layers, heads, kv, vocab = LLAMA3["405b"]
    base = work / "405b" / "base"
    if not (base / "model.safetensors").exists():
        save_sparse_llama(str(base), hidden, intermediate, layers, vocab, heads=heads, kv_heads=kv, context=131072)
    adapter = save_lora_by_hand(str(work / "405b" / "lora"), str(base), hidden, layers, targets=("q_proj",))
    argv = [sys.executable, "-m", "packager.cli.main", "package", "--adapter", f"big={adapter}", "--layout",
            "shared", "--device", "cuda", "--dry-run", "--json", "--work", str(work / "out")]  # fmt: skip
    env = {**os.environ, "PACKAGER_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    seconds, cold = [], drop_caches()
    for _ in range(repeats):
        drop_caches()
        started = time.monotonic()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        seconds.append(time.monotonic() - started)
    size = (base / "model.safetensors").stat().st_size
    cache = "cold" if cold else "warm (could not drop caches)"
    print(
        f"| dry run, 405B shared ({size / 1e9:.0f} GB) | {statistics.median(seconds):.1f} s | "
        f"min {min(seconds):.1f} s, {repeats} runs, {cache} |"
    )


def pinning(work: Path, files: int, file_mb: int, repeats: int) -> None:
    paths = []
    for i in range(files):
        path = work / f"blob-{i}.bin"
        if not path.exists() or path.stat().st_size != file_mb << 20:
            with open(path, "wb") as f:
                for _ in range(file_mb):
                    f.write(os.urandom(1 << 20))
        paths.append(str(path))
    total = files * (file_mb << 20)
    subprocess.run(["sha256sum", *paths], check=True, capture_output=True)  # warm the page cache
    ours, single, floor = [], [], []
    for _ in range(repeats):
        for workers, times in ((None, ours), (1, single)):
            os.environ["PACKAGER_CACHE"] = tempfile.mkdtemp(dir=work)  # nothing remembered: every file hashed
            started = time.monotonic()
            sha256_files(paths, workers)
            times.append(time.monotonic() - started)
        started = time.monotonic()
        subprocess.run(["sha256sum", *paths], check=True, capture_output=True)
        floor.append(time.monotonic() - started)
    mine, one, theirs = statistics.median(ours), statistics.median(single), statistics.median(floor)
    print(
        f"| pinning, {files} x {file_mb} MiB, packager (every core) | {total / mine / 1e9:.2f} GB/s | "
        f"{one / mine:.2f}x its one-thread run ({total / one / 1e9:.2f} GB/s); {theirs / mine:.2f}x sha256sum "
        f"({total / theirs / 1e9:.2f} GB/s, coreutils, one core) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work" / "plan"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_model()}\n\n| what | figure | against |\n|---|---|---|")
    dry_run(work, args.repeats)
    pinning(work, args.files, args.file_mb, args.repeats)


if __name__ == "__main__":
    main()
