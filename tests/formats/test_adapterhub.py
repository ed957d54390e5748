"""AdapterHub (`adapters` library) saves, made by the library itself: LoRA and (IA)3 merge to the library's own
merged weights, tensor for tensor, and answer as its unmerged model does; AdapterTrainer checkpoints are found;
every method that does not merge is refused in one line."""

from __future__ import annotations

import os
import warnings

import adapters
import pytest
import torch
import transformers

from packager.cli.main import main
from packager.errors import AdapterError, IncompatibleAdapterError, UnsafeFormatError
from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest, resolve
from tests import families, models

INPUT = torch.tensor([[1, 5, 9, 17, 33, 2, 70, 3]])
LORA = adapters.LoRAConfig(r=4, alpha=8, attn_matrices=["q", "v"], intermediate_lora=True, output_lora=True)


def _library_model(base: str, model_class: str):
    model = getattr(transformers, model_class).from_pretrained(base, dtype=torch.float32)
    adapters.init(model)
    return model


def _save(base: str, model_class: str, config, folder: str, seed: int = 1, train_head: bool = False, **kw) -> str:
    """A trained-looking adapter saved by the library (`save_adapter`): every adapter tensor randomized."""
    torch.manual_seed(seed)
    model = _library_model(base, model_class)
    model.add_adapter("task", config=config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".loras." in name or (train_head and name.startswith("classifier.")):
                param.add_(torch.randn_like(param) * 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_adapter(folder, "task", **kw)
    return folder


def _library_answers(base: str, model_class: str, folder: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The library's unmerged output on INPUT, and its own merged weights (merge_adapter)."""
    model = _library_model(base, model_class).eval()
    name = model.load_adapter(folder, use_safetensors=os.path.isfile(os.path.join(folder, "adapter.safetensors")))
    model.set_active_adapters(name)
    with torch.no_grad():
        unmerged = _output(model(INPUT))
    model.merge_adapter(name)
    return unmerged, {k: v for k, v in model.state_dict().items() if ".loras." not in k}


def _output(result) -> torch.Tensor:
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapterhub")
    llama = models.save_base(models.llama_config(), str(root / "llama"))
    bert = families.save_base("bert", "BertForSequenceClassification", str(root / "bert"))
    models.with_random_biases(bert, bert, transformers.BertForSequenceClassification)  # (IA)3 scales biases
    return {
        "llama": llama,
        "bert": bert,
        "llama-lora": _save(llama, "LlamaForCausalLM", LORA, str(root / "llama-lora"), use_safetensors=True),
        "llama-ia3": _save(llama, "LlamaForCausalLM", adapters.IA3Config(), str(root / "llama-ia3")),
        "bert-lora": _save(bert, "BertForSequenceClassification", LORA, str(root / "bert-lora"), train_head=True),
        "bert-ia3": _save(bert, "BertForSequenceClassification", adapters.IA3Config(), str(root / "bert-ia3")),
    }


CASES = [
    ("llama-lora", "llama", "LlamaForCausalLM", "stream"),
    ("llama-ia3", "llama", "LlamaForCausalLM", "stream"),
    ("bert-lora", "bert", "BertForSequenceClassification", "stream"),
]


@pytest.mark.parametrize(("adapter", "base", "model_class", "engine"), CASES)
def test_merges_to_the_librarys_own_merged_weights(hub, adapter, base, model_class, engine, tmp_path) -> None:
    outcome = run_merge(ResolveRequest(hub[adapter], allow_pickle=True), str(tmp_path / "out"), quiet=True)
    assert outcome.result.plan.merge.engine == engine
    assert any("AdapterHub" in note for note in outcome.result.plan.merge.notes)
    unmerged, expected = _library_answers(hub[base], model_class, hub[adapter])
    merged = getattr(transformers, model_class).from_pretrained(str(tmp_path / "out"), dtype=torch.float32).eval()
    state = merged.state_dict()
    changed = [k for k in state if not torch.equal(state[k], hub_base_state(hub[base], model_class)[k])]
    assert changed, "the adapter must change weights, or this test proves nothing"
    assert {k: v for k, v in state.items() if not torch.equal(v, expected[k])} == {}
    with torch.no_grad():
        torch.testing.assert_close(_output(merged(INPUT)), unmerged, rtol=0, atol=1e-5)


def hub_base_state(base: str, model_class: str) -> dict[str, torch.Tensor]:
    return getattr(transformers, model_class).from_pretrained(base, dtype=torch.float32).state_dict()


def test_ia3_on_a_model_with_biases_answers_as_the_librarys_unmerged_model(hub, tmp_path) -> None:
    """(IA)3 scales a module's output, bias included: the merge scales the bias as the unmerged forward does
    (the library's own merge_adapter leaves biases as they are)."""
    run_merge(ResolveRequest(hub["bert-ia3"], allow_pickle=True), str(tmp_path / "out"), quiet=True)
    unmerged, library_merged = _library_answers(hub["bert"], "BertForSequenceClassification", hub["bert-ia3"])
    merged = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(INPUT).logits, unmerged, rtol=0, atol=1e-5)
    key = "bert.encoder.layer.0.attention.self.key.bias"
    assert not torch.equal(merged.state_dict()[key], library_merged[key]), "biases must differ, or this proves nothing"


def test_the_plan_names_the_base_and_task_the_save_records(hub) -> None:
    plan = resolve(ResolveRequest(hub["bert-lora"], allow_pickle=True)).plan
    assert plan.base.path == hub["bert"] and plan.task.name == "SEQ_CLS"
    assert plan.adapter.peft_type == "LORA" and plan.adapter.settings["lora_alpha"] == 8


def test_an_adaptertrainer_run_gives_its_newest_or_chosen_checkpoint(hub, tmp_path) -> None:
    for step, seed in ((2, 1), (5, 2)):  # AdapterTrainer._save: model.save_all_adapters(checkpoint-N)
        model = _library_model(hub["llama"], "LlamaForCausalLM")
        model.add_adapter("task", config=LORA)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.add_(torch.randn_like(param)) if ".loras." in name else None
        model.save_all_adapters(str(tmp_path / "run" / f"checkpoint-{step}"))
    newest = resolve(ResolveRequest(str(tmp_path / "run"), allow_pickle=True)).adapter
    chosen = resolve(ResolveRequest(str(tmp_path / "run"), checkpoint=2, allow_pickle=True)).adapter
    assert "checkpoint-5" in newest.notes[0] and "checkpoint-2" in chosen.notes[0]
    with pytest.raises(AdapterError, match="no checkpoint-3"):
        resolve(ResolveRequest(str(tmp_path / "run"), checkpoint=3, allow_pickle=True))


def test_a_checkpoint_with_two_adapters_asks_for_one(hub, tmp_path) -> None:
    model = _library_model(hub["llama"], "LlamaForCausalLM")
    model.add_adapter("sql", config=LORA)
    model.add_adapter("chat", config=LORA)
    model.save_all_adapters(str(tmp_path / "run" / "checkpoint-1"))
    with pytest.raises(AdapterError, match="holds AdapterHub adapters chat, sql; pass the one"):
        resolve(ResolveRequest(str(tmp_path / "run"), allow_pickle=True))


def test_a_pickled_save_needs_allow_pickle(hub) -> None:
    with pytest.raises(UnsafeFormatError, match=r"use_safetensors=True.*--allow-pickle"):
        resolve(ResolveRequest(hub["llama-ia3"]))


@pytest.mark.parametrize(
    ("config", "what"),
    [
        (lambda: adapters.SeqBnConfig(reduction_factor=4), "AdapterHub bottleneck"),
        (lambda: adapters.CompacterConfig(phm_dim=2), "AdapterHub Compacter"),
        (lambda: adapters.PrefixTuningConfig(prefix_length=4), "AdapterHub prefix_tuning"),
        (lambda: adapters.UniPELTConfig(), "AdapterHub union of"),
        (lambda: adapters.LoRAConfig(r=4, use_gating=True), "AdapterHub gated lora"),
    ],
)
def test_methods_that_do_not_merge_are_read_unmerged_and_merge_is_refused(hub, config, what, tmp_path, capsys) -> None:
    """Saved as the library does by default (a pickle, which prefix tuning's shared tensors need): read as they are,
    for the `adapters` library to serve; `merge` is refused in one line, before any weight is written."""
    folder = _save(hub["llama"], "LlamaForCausalLM", config(), str(tmp_path / "ahub"))
    plan = resolve(ResolveRequest(folder, allow_pickle=True)).plan
    assert plan.merge is None and plan.adapter.peft_type == "ADAPTERHUB" and plan.adapter.library == "adapters"
    assert plan.adapter.settings["adapterhub"]["method"].startswith(what) and plan.task.name == "CAUSAL_LM"
    assert {f.path for f in plan.adapter.files} >= {"adapter_config.json", "pytorch_adapter.bin", "head_config.json"}
    code = main(["merge", "--adapter", folder, "--output", str(tmp_path / "out"), "--allow-pickle"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and what in err[0], err
    assert "changes the forward pass instead of the weights, so there is nothing to merge" in err[0]
    assert not os.path.exists(tmp_path / "out")


def test_a_pickled_unmerged_save_needs_allow_pickle(hub, tmp_path) -> None:
    folder = _save(hub["llama"], "LlamaForCausalLM", adapters.SeqBnConfig(), str(tmp_path / "ahub"))
    with pytest.raises(UnsafeFormatError, match="--allow-pickle"):
        resolve(ResolveRequest(folder))


def test_a_prediction_head_names_the_task_and_is_served_unmerged(hub, tmp_path) -> None:
    model = adapters.AutoAdapterModel.from_pretrained(hub["bert"])
    model.add_adapter("task", config=LORA)
    model.add_classification_head("task", num_labels=3)
    model.save_adapter(str(tmp_path / "flex"), "task", use_safetensors=True)
    plan = resolve(ResolveRequest(str(tmp_path / "flex"))).plan
    assert plan.merge is None and plan.task.name == "SEQ_CLS"
    assert plan.adapter.settings["adapterhub"]["head_type"] == "classification"
    assert "model_head.safetensors" in {f.path for f in plan.adapter.files}


def test_a_head_packager_cannot_answer_with_is_refused_naming_it(hub, tmp_path) -> None:
    model = adapters.AutoAdapterModel.from_pretrained(hub["bert"])
    model.add_adapter("task", config=LORA)
    model.add_multiple_choice_head("task", num_choices=2)
    model.save_adapter(str(tmp_path / "flex"), "task", use_safetensors=True)
    with pytest.raises(IncompatibleAdapterError, match="multiple_choice prediction head"):
        resolve(ResolveRequest(str(tmp_path / "flex")))


def test_a_lora_trained_on_a_4bit_base_merges_onto_its_nf4_rounding(hub, tmp_path) -> None:
    """Trained with the library on a bitsandbytes 4-bit base (QLoRA): --qlora simulate-nf4 gives each targeted
    weight the library's dequantized 4-bit weight plus its own LoRA delta, exactly, and passes the 4-bit parity."""
    from peft.utils.integrations import dequantize_bnb_weight

    quantized = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dtype as stored: without one transformers casts to fp16 before quantizing, and simulate-nf4 rounds the
        # weights as stored
        model = transformers.LlamaForCausalLM.from_pretrained(
            hub["llama"], quantization_config=quantized, dtype=torch.float32
        )
    adapters.init(model)
    model.add_adapter("task", config=LORA)
    torch.manual_seed(4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".loras." in name:
                param.add_(torch.randn_like(param) * 0.2)
    model.save_adapter(str(tmp_path / "qlora"), "task", use_safetensors=True)
    request = ResolveRequest(str(tmp_path / "qlora"), qlora=True, qlora_merge="simulate-nf4")
    outcome = run_merge(request, str(tmp_path / "out"), quiet=True)
    assert outcome.parity.passed and "4-bit" in outcome.parity.reference
    stored = models.saved_tensors(str(tmp_path / "out"))
    checked = 0
    for name, module in model.named_modules():
        if type(module).__name__ == "LoRALinear4bit" and "task" in module.loras:
            lora = module.loras["task"]
            expected = dequantize_bnb_weight(module.weight, state=module.weight.quant_state).float()
            expected = expected + (lora.lora_B @ lora.lora_A) * lora.scaling
            assert torch.equal(stored[f"{name}.weight"], expected), name
            checked += 1
    assert checked == 2 * 4  # q, v, up and down projections in both layers
