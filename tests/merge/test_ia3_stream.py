"""(IA)3 adapters go through the streaming merge, bit-identical to PEFT's merge_and_unload: weights scaled by
row (output) or by column (feed-forward input), biases of non-feed-forward modules scaled too, Conv1D transposed."""

from __future__ import annotations

import pytest
import torch
from peft import IA3Config, get_peft_model
from transformers import AutoModelForCausalLM

from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from tests import models

CASES = {  # base fixture, dtype, target modules, feed-forward modules
    "llama": ("llama", torch.float32, ["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "llama-bf16": ("llama-bf16", torch.bfloat16, ["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gpt2-conv1d-biases": ("gpt2", torch.float32, ["c_attn", "mlp.c_fc", "mlp.c_proj"], ["mlp.c_proj"]),
    "gpt2-bf16": ("gpt2-bf16", torch.bfloat16, ["c_attn", "mlp.c_fc", "mlp.c_proj"], ["mlp.c_proj"]),
}


def _ia3_adapter(base: str, path: str, targets: list[str], feedforward: list[str]) -> str:
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = IA3Config(target_modules=targets, feedforward_modules=feedforward, init_ia3_weights=False)
    get_peft_model(model, config).save_pretrained(path)  # init_ia3_weights=False: random vectors, not ones
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_ia3_streams_bit_identical_to_peft(bases, case, tmp_path) -> None:
    base_name, dtype, targets, feedforward = CASES[case]
    base = models.with_random_biases(bases[base_name], str(tmp_path / "base")) if "gpt2" in case else bases[base_name]
    adapter = _ia3_adapter(base, str(tmp_path / "ia3"), targets, feedforward)
    outcome = run_merge(ResolveRequest(adapter, base=base), str(tmp_path / "out"), quiet=True)
    merge = outcome.result.plan.merge
    assert merge.engine == "stream" and merge.engine_reason == "(IA)3 merged tensor by tensor"
    assert outcome.parity.passed
    expected = models.peft_merged_state(base, adapter, dtype)
    merged = models.loaded_state(str(tmp_path / "out"), dtype)
    before = models.loaded_state(base, dtype)
    changed = [k for k in merged if not torch.equal(merged[k], before[k])]
    assert any(k.endswith(".bias") for k in changed) == base_name.startswith("gpt2"), changed
    models.assert_states_equal(expected, merged)


def test_ia3_on_the_output_head_streams_equal_to_peft(bases, tmp_path) -> None:
    adapter = _ia3_adapter(bases["llama"], str(tmp_path / "ia3"), ["k_proj", "lm_head"], [])
    outcome = run_merge(ResolveRequest(adapter, base=bases["llama"]), str(tmp_path / "out"), quiet=True)
    assert outcome.result.plan.merge.engine == "stream"
    expected = models.peft_merged_state(bases["llama"], adapter, torch.float32)
    models.assert_states_equal(expected, models.loaded_state(str(tmp_path / "out"), torch.float32))


def test_an_ia3_vector_for_another_base_is_refused_before_any_weight_is_read(bases, tmp_path) -> None:
    from packager.errors import IncompatibleAdapterError

    adapter = _ia3_adapter(bases["llama"], str(tmp_path / "ia3"), ["k_proj", "down_proj"], ["down_proj"])
    with pytest.raises(IncompatibleAdapterError, match=r"\(IA\)3 vector for .* does not fit .*--base"):
        run_merge(ResolveRequest(adapter, base=bases["llama-wide"]), str(tmp_path / "out"), quiet=True)
    assert not (tmp_path / "out").exists()
