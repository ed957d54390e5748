"""The runtime is chosen at plan time, with its reason; what vLLM cannot serve is routed or refused there."""

from __future__ import annotations

import json

import pytest

from packager.artefact.spec import ArtefactSpec
from packager.errors import IncompatibleAdapterError, UserInputError
from packager.plan import AdapterSpec
from packager.planning.engine import choose_runtime, head_dim, vllm_lora_rank
from packager.quantize.schemes import SCHEMES, names

LLAMA = {"architectures": ["LlamaForCausalLM"], "hidden_size": 128, "num_attention_heads": 4}


def _adapter(**settings) -> AdapterSpec:
    return AdapterSpec("/a/x", None, settings.pop("peft_type", "LORA"), {"r": 8, **settings}, ())


def test_vllms_own_registry_decides_which_architectures_it_serves() -> None:
    """GPT-2 and OPT were not in the old hand list of seven; vLLM's registry lists them. A shared image needs
    LoRA on the architecture too: vLLM takes none on GPT-2, some on OPT."""
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "n_embd": 128, "n_head": 4}
    assert choose_runtime("auto", "baked", gpt2, ArtefactSpec(), [_adapter()]).engine == "vllm"
    shared = choose_runtime("auto", "shared", gpt2, ArtefactSpec(), [_adapter()])
    assert shared.engine == "packager" and "takes no LoRA adapters on it" in shared.reason
    opt = {**LLAMA, "architectures": ["OPTForCausalLM"]}
    assert choose_runtime("auto", "shared", opt, ArtefactSpec(), [_adapter()]).engine == "vllm"
    neox = {**LLAMA, "architectures": ["GPTNeoXForCausalLM"]}  # through vLLM's transformers backend
    assert choose_runtime("auto", "baked", neox, ArtefactSpec(), [_adapter()]).engine == "vllm"


def test_auto_picks_vllm_for_a_llama_it_serves() -> None:
    choice = choose_runtime("auto", "shared", LLAMA, ArtefactSpec(), [_adapter()])
    assert choice.engine == "vllm" and "text generation" in choice.reason


@pytest.mark.parametrize(
    ("config", "artefact", "why", "device"),
    [
        ({**LLAMA, "hidden_size": 64}, ArtefactSpec(), "head size 16", "cpu"),
        ({**LLAMA, "architectures": ["XGLMForCausalLM"]}, ArtefactSpec(), "XGLMForCausalLM", "cpu"),
        (LLAMA, ArtefactSpec("none", "onnx"), "onnx", "cpu"),
        (LLAMA, ArtefactSpec("bnb-int8"), "bnb-int8", "cuda"),
    ],
)
def test_what_vllm_cannot_serve_goes_to_packagers_runtime_or_is_refused(config, artefact, why, device) -> None:
    choice = choose_runtime("auto", "baked", config, artefact, [_adapter()], device=device)
    assert choice.engine == "packager" and why in choice.reason
    with pytest.raises(UserInputError, match=f"--runtime vllm cannot serve this model: .*{why}"):
        choose_runtime("vllm", "baked", config, artefact, [_adapter()], device=device)


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "lora_only"}, "bias"),
        ({"r": 1024}, "rank 1024"),
        ({"peft_type": "IA3"}, "IA3"),
    ],
)
def test_adapters_vllm_cannot_serve_unmerged_go_to_packagers_server_unless_vllm_is_asked_for(settings, why) -> None:
    """--runtime auto chooses, never refuses what one runtime serves (issue 18); --runtime vllm still refuses."""
    adapters = (
        [_adapter(**settings), _adapter(**settings)] if "peft_type" in settings else [_adapter(), _adapter(**settings)]
    )
    choice = choose_runtime("auto", "shared", LLAMA, ArtefactSpec(), adapters)
    assert choice.engine == "packager" and why in choice.reason and "/a/x" in choice.reason
    with pytest.raises(IncompatibleAdapterError, match=f"{why}.*use --layout baked.*or --runtime packager"):
        choose_runtime("vllm", "shared", LLAMA, ArtefactSpec(), adapters)
    assert choose_runtime("auto", "baked", LLAMA, ArtefactSpec(), [_adapter(**settings)]).engine == "vllm"  # merged
    assert choose_runtime("packager", "shared", LLAMA, ArtefactSpec(), [_adapter(**settings)]).engine == "packager"
    with pytest.raises(IncompatibleAdapterError, match=why):  # a quantized base is made for vLLM's kernels
        choose_runtime("auto", "shared", LLAMA, ArtefactSpec("fp8"), adapters)


@pytest.mark.parametrize("scheme", names("streamed"))
def test_a_quantized_checkpoint_goes_to_vllm_where_its_kernels_run_and_is_refused_elsewhere(scheme) -> None:
    spec = ArtefactSpec(scheme)
    for device in ("cpu", "cuda"):
        if device in SCHEMES[scheme].devices:
            choice = choose_runtime("auto", "baked", LLAMA, spec, [_adapter()], device=device)
            assert choice.engine == "vllm" and f"compressed-tensors {scheme} checkpoint" in choice.reason
            continue
        for runtime in ("auto", "vllm", "packager"):  # its point is the engine's kernels: refused before any work
            with pytest.raises(UserInputError, match=rf"--quantize {scheme}: vLLM serves it on CUDA, not on "
                               rf"--device {device} \(.*\); use --device cuda"):  # fmt: skip
                choose_runtime(runtime, "baked", LLAMA, spec, [_adapter()], device=device)


def test_w4a16_on_cpu_is_refused_with_the_measured_reason_and_what_runs_there() -> None:
    with pytest.raises(UserInputError, match=r"w4a16: .*only in its AVX-512 build.*use --device cuda, or --quantize "
                       r"w8a8 or fp8 on CPU"):  # fmt: skip
        choose_runtime("auto", "baked", LLAMA, ArtefactSpec("w4a16"), [_adapter()])


def test_lora_on_a_quantized_base_takes_the_schemes_whose_lora_kernels_run_on_the_device() -> None:
    fp8 = choose_runtime("auto", "shared", LLAMA, ArtefactSpec("fp8"), [_adapter()])
    assert fp8.engine == "vllm"
    refusal = r"w8a8: vLLM serves LoRA adapters on a base quantized with it on CUDA, not on --device cpu \(without AMX"
    with pytest.raises(UserInputError, match=refusal + r".*\); use --device cuda, or --quantize fp8 on CPU"):
        choose_runtime("auto", "shared", LLAMA, ArtefactSpec("w8a8"), [_adapter()])


def test_lora_rank_is_the_smallest_vllm_allows_that_holds_every_adapter() -> None:
    assert vllm_lora_rank([_adapter(r=4)]) == 8
    assert vllm_lora_rank([_adapter(r=8), _adapter(r=16, rank_pattern={"q_proj": 40})]) == 64
    assert vllm_lora_rank([_adapter(r=320)]) == 320


def test_head_dim_prefers_the_config_value() -> None:
    assert head_dim({"head_dim": 80, "hidden_size": 4096, "num_attention_heads": 32}) == 80
    assert head_dim(LLAMA) == 32 and head_dim({}) is None


def test_a_gpu_image_takes_any_head_size_and_load_time_quantization() -> None:
    small = {**LLAMA, "hidden_size": 64}
    assert choose_runtime("auto", "baked", small, ArtefactSpec(), [_adapter()], device="cuda").engine == "vllm"
    nf4 = ArtefactSpec("bnb-nf4")
    assert choose_runtime("auto", "baked", LLAMA, nf4, [_adapter()], device="cuda").engine == "vllm"


@pytest.mark.parametrize("scheme", ["bnb-nf4", "bnb-int8", "fp8-load"])
@pytest.mark.parametrize("runtime", ["auto", "packager", "vllm"])
def test_load_time_gpu_quantization_on_a_cpu_plan_is_refused_before_it_cannot_start(scheme, runtime) -> None:
    """Issue 24: `--quantize bnb-nf4` on CPU was planned and the image exited at start (code 4, no GPU)."""
    with pytest.raises(UserInputError) as refused:
        choose_runtime(runtime, "baked", LLAMA, ArtefactSpec(scheme), [_adapter()])
    message = str(refused.value)
    assert "\n" not in message and "it would exit at start" in message and "pass --device cuda" in message


def _tokenizer(folder, tokenizer_class: str, pre_tokenizer: dict) -> str:
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
    (folder / "tokenizer.json").write_text(json.dumps({"pre_tokenizer": pre_tokenizer, "model": {"type": "BPE"}}))
    return str(folder)


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False}


@pytest.mark.parametrize(
    "pre_tokenizer", [BYTE_LEVEL, {"type": "Sequence", "pretokenizers": [{"type": "Split"}, BYTE_LEVEL]}]
)
def test_a_byte_level_tokenizer_named_llama_is_not_sent_to_vllms_transformers_5(tmp_path, pre_tokenizer) -> None:
    """transformers' GGUF conversion saves SmolLM2's byte-level BPE as `LlamaTokenizer`; vLLM's transformers 5
    rebuilds that class as SentencePiece and answered "_no_cuisine_" for "The capital of France is"."""
    folder = _tokenizer(tmp_path, "LlamaTokenizerFast", pre_tokenizer)
    choice = choose_runtime("auto", "baked", LLAMA, ArtefactSpec(), [_adapter()], tokenizer_dirs=(folder,))
    assert choice.engine == "packager" and "names LlamaTokenizerFast, but its tokenizer.json is a byte-level BPE" in (
        choice.reason
    )
    with pytest.raises(UserInputError, match=r'--runtime vllm cannot serve this model: .*"PreTrainedTokenizerFast"'):
        choose_runtime("vllm", "baked", LLAMA, ArtefactSpec(), [_adapter()], tokenizer_dirs=(folder,))


@pytest.mark.parametrize(
    ("tokenizer_class", "pre_tokenizer"),
    [
        ("LlamaTokenizerFast", {"type": "Metaspace", "replacement": "\u2581"}),  # a SentencePiece Llama: as built
        ("PreTrainedTokenizerFast", BYTE_LEVEL),  # Llama 3: read from tokenizer.json as saved
        ("GPT2Tokenizer", BYTE_LEVEL),  # SmolLM2 as released
    ],
)
def test_tokenizers_vllm_reads_as_saved_stay_on_vllm(tmp_path, tokenizer_class, pre_tokenizer) -> None:
    folder = _tokenizer(tmp_path, tokenizer_class, pre_tokenizer)
    choice = choose_runtime("auto", "baked", LLAMA, ArtefactSpec(), [_adapter()], tokenizer_dirs=(folder, "/none"))
    assert choice.engine == "vllm"


def test_adapters_of_two_methods_cannot_share_one_image_whatever_the_runtime() -> None:
    """PEFT refuses to load a LoRA and an (IA)3 into one model: such an image would not start, so it is refused
    at plan time (found by the e2e test of a shared IA3 image)."""
    adapters = [_adapter(), AdapterSpec("/a/ia3", None, "IA3", {}, ())]
    for runtime in ("auto", "packager", "vllm"):
        with pytest.raises(IncompatibleAdapterError, match=r"of 2 \(LORA: /a/x; IA3: /a/ia3\).*--layout baked"):
            choose_runtime(runtime, "shared", LLAMA, ArtefactSpec(), adapters)
    assert choose_runtime("auto", "shared", LLAMA, ArtefactSpec(), adapters[1:]).engine == "packager"
