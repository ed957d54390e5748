"""Benchmark: what signing and checking a signed image cost, against the floor (one sha256 pass over the same
bytes with hashlib, one core, warm page cache; coreutils' `sha256sum` beside it): every path reads every signed
byte once.

- sign: `sign_model` on a build context whose model is one weight file of --weight-mb random bytes (model-signing
  hashes the files, then one ECDSA signature);
- start-up check: the runtime's `check_files` (what a pod does with a mounted signature before loading);
- verify-image's layer pass: `_read_layer` on the weight's layer as an uncompressed tar (the oci builder's), which
  hashes the blob (its digest, on a second thread) and each file in it (two sha256 over the same bytes).

    python bench/sign.py [--weight-mb 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.plan import cpu_model  # noqa: E402
from packager.image.context import ModelFiles, write_context  # noqa: E402
from packager.plan import FileEntry  # noqa: E402
from packager.runtime.signature import check_files  # noqa: E402
from packager.signing.keys import load_signing_key  # noqa: E402
from packager.signing.model import sign_model  # noqa: E402
from packager.signing.verify import _read_layer  # noqa: E402
from tests import plans  # noqa: E402
from tests.signing_keys import write_key  # noqa: E402


def timed(step, repeats: int) -> float:
    """Median wall time of `step()` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def context_with_weight(root: Path, size: int) -> Path:
    """A rendered baked context whose model is one weight file of `size` random bytes (and a config)."""
    folder = root / "merged"
    folder.mkdir()
    weight = folder / "model.safetensors"
    with open(weight, "wb") as f:
        for _ in range(size >> 24):
            f.write(os.urandom(1 << 24))
    (folder / "config.json").write_text("{}")
    files = tuple(FileEntry(p.name, p.stat().st_size, _sha256(p)) for p in sorted(folder.iterdir()))
    model = ModelFiles(str(folder), files)
    return Path(write_context(plans.baked(), str(root / "ctx"), model, model.files).path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weight-mb", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.weight_mb << 20
    scratch = ROOT / "bench" / "work"
    with tempfile.TemporaryDirectory(dir=scratch if scratch.is_dir() else None) as tmp:
        root = Path(tmp)
        context = context_with_weight(root, size)
        key = load_signing_key(str(write_key(root / "sign.pem")))
        weight = next(p for p in context.rglob("model.safetensors") if p.is_file())
        coreutils = ["sha256sum", str(weight)]
        sha256sum = timed(lambda: subprocess.run(coreutils, check=True, capture_output=True), args.repeats)
        floor = timed(lambda: _sha256(weight), args.repeats)
        out = root / "sig"
        out.mkdir()
        signature = None

        def sign() -> None:
            nonlocal signature
            signature = sign_model(str(context), key, str(out / "model.sig"), {})

        sign_s = timed(sign, args.repeats)
        image = root / "image"
        (image / "models" / "merged").mkdir(parents=True)
        os.link(weight, image / "models" / "merged" / "model.safetensors")
        digests = {k: v for k, v in signature.digests.items() if k.endswith("model.safetensors")}
        check_s = timed(lambda: check_files(str(image), digests, ()), args.repeats)
        layer = root / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            tar.add(weight, arcname="models/merged/model.safetensors")

        def read_layer() -> None:
            with open(layer, "rb") as f:
                _read_layer(f, digests, {})

        layer_s = timed(read_layer, args.repeats)
    gb = size / 1e9
    print(f"CPU: {cpu_model()}; weight {args.weight_mb} MiB; median of {args.repeats}; warm page cache")
    print("| path | seconds | GB/s | vs the floor |")
    print("|---|---|---|---|")
    for name, seconds in (
        ("sha256 once, hashlib/OpenSSL (floor, one core)", floor),
        ("sha256sum (coreutils)", sha256sum),
        ("sign_model (model-signing + ECDSA)", sign_s),
        ("runtime start-up check (check_files)", check_s),
        ("verify-image layer pass (blob + file sha256)", layer_s),
    ):
        print(f"| {name} | {seconds:.2f} | {gb / seconds:.2f} | {seconds / floor:.2f}x |")


if __name__ == "__main__":
    main()
