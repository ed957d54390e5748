"""Session fixtures: tiny real base models, built once per test run."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest
import torch

from tests import models


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path_factory.getbasetemp() / "packager-cache"))


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> folder of a saved tiny base model."""
    root = tmp_path_factory.mktemp("bases")
    return {
        "llama": models.save_base(models.llama_config(), str(root / "llama")),
        "llama-bf16": models.save_base(models.llama_config(), str(root / "llama-bf16"), dtype=torch.bfloat16),
        "llama-sharded": models.save_base(models.llama_config(), str(root / "llama-sharded"), max_shard_size="60KB"),
        "llama-tied": models.save_base(models.llama_config(tie_word_embeddings=True), str(root / "llama-tied")),
        "llama-wide": models.save_base(
            models.llama_config(hidden_size=32, intermediate_size=64), str(root / "llama-wide")
        ),
        "gpt2": models.save_base(models.gpt2_config(), str(root / "gpt2")),
        "gpt2-bf16": models.save_base(models.gpt2_config(), str(root / "gpt2-bf16"), dtype=torch.bfloat16),
        "qwen2": models.save_base(models.qwen2_config(), str(root / "qwen2")),
    }


@pytest.fixture(scope="session")
def demo_adapter(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo adapter (packager demo: a tiny Llama base and a LoRA trained on it), made once per run."""
    from packager.demo import build_demo

    _, adapter = build_demo(str(tmp_path_factory.mktemp("demo-adapter") / "demo"))
    return adapter


@pytest.fixture(scope="session")
def demo_merged(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo adapter merged into the demo base (fp32): the input of the quantize and export tests."""
    from packager.demo import build_demo
    from packager.merge.run import run_merge
    from packager.resolve.resolver import ResolveRequest

    root = tmp_path_factory.mktemp("demo-merged")
    _, adapter = build_demo(str(root / "demo"))
    run_merge(ResolveRequest(adapter), str(root / "merged"), verify=False, quiet=True)
    return str(root / "merged")
