"""vLLM serves what its own registry lists, not a hand list: the table packager routes by is the runtime image's
registry, and a model outside the old seven families (GPT-2) gets a vLLM image that answers like transformers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

from packager.demo import build_tokenizer
from packager.package import package
from packager.planning.vllm_models import registry
from tests import models
from tests.e2e import containers
from tests.e2e.test_vllm_images import SHM, _completion, _greedy, _same
from tests.requests import package_request

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).parents[2] / "scripts" / "vllm_models.py"


def test_the_shipped_table_is_the_runtime_images_registry(vllm_image, engine) -> None:
    """scripts/vllm_models.py run inside the image prints packager/data/vllm_models.json: regenerate it when the
    image's vLLM changes."""
    argv = ["docker", "-H", engine.docker_host, "run", "--rm", "-i", "--network", "none", "--entrypoint", "python3"]
    with open(SCRIPT) as script:
        out = subprocess.run([*argv, vllm_image, "-"], stdin=script, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == registry()


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> dict[str, str]:
    """A GPT-2 (head size 32, vLLM's CPU kernels take it) with the demo tokenizer, and a LoRA on c_attn."""
    root = tmp_path_factory.mktemp("vllm-gpt2")
    os.chmod(root, 0o755)
    tokenizer = build_tokenizer(str(root / "tokenizer"))
    config = transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=2, n_positions=256, vocab_size=len(tokenizer), initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    base = models.save_base(config, str(root / "base"))
    tokenizer.save_pretrained(base)
    adapter = models.save_adapter(base, str(root / "lora"), target_modules=["c_attn"], fan_in_fan_out=True)
    return {"base": base, "lora": adapter}


def test_a_gpt2_adapter_gets_a_vllm_image_that_answers_like_transformers(gpt2, vllm_image, docker_client, tmp_path):
    request = package_request(
        (("gpt2-lora", gpt2["lora"]),), "baked", vllm_image, "demo/vllm-gpt2:1", work=str(tmp_path / "work"),
        quiet=True, builder="docker", runtime="auto", verify=False,  # --max-model-len: its n_positions
    )  # fmt: skip
    report = package(request, log=lambda _line: None)
    merged = str(tmp_path / "work" / "merged")
    expected = _greedy(transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32),
                       transformers.AutoTokenizer.from_pretrained(merged))  # fmt: skip
    assert docker_client.images.get(report.image).labels["io.packager.runtime"] == "vllm"
    container = containers.start(docker_client, report.image, shm_size=SHM)
    try:
        containers.wait_healthy(container, timeout=400)
        assert _same(_completion(container, "gpt2-lora"), expected), expected
    finally:
        container.remove(force=True)
        docker_client.images.remove(report.image, force=True)
