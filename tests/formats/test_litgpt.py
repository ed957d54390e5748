"""LitGPT runs (issue 11): a `finetune_lora` output folder merges onto the Hugging Face base into exactly what
LitGPT's own merge_lora + convert_lit_checkpoint make of it; non-LoRA methods and unguarded pickles are refused."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from packager.errors import AdapterError, IncompatibleAdapterError, UnsafeFormatError
from packager.formats.litgpt import find_run
from packager.merge.run import run_merge
from packager.resolve.resolver import ResolveRequest
from tests import litgpt_runs, models


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    return models.save_base(
        models.llama_config(num_attention_heads=4, num_key_value_heads=2), str(tmp_path_factory.mktemp("hf") / "b")
    )


@pytest.mark.parametrize("key", [False, True], ids=["q-v", "q-k-v"])
def test_a_litgpt_lora_run_merges_into_litgpts_own_merge(base, tmp_path, key) -> None:
    run, expected = litgpt_runs.save_run(base, str(tmp_path / "out"), {**litgpt_runs.LORA, "lora_key": key})
    outcome = run_merge(ResolveRequest(run, base=base, allow_pickle=True), str(tmp_path / "merged"), quiet=True)
    assert outcome.parity.passed and any("LitGPT run" in n for n in outcome.resolved.plan.merge.notes)
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert set(merged) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor.float(), atol=1e-6, rtol=1e-5, msg=name)
    changed = [n for n in expected if not torch.equal(expected[n], load_file(f"{base}/model.safetensors")[n])]
    assert any("k_proj" in n for n in changed) == key and any("lm_head" in n for n in changed)


def test_the_newest_step_or_a_chosen_one_is_found(tmp_path) -> None:
    for step in (100, 200):
        folder = tmp_path / f"step-{step:06d}"
        folder.mkdir()
        (folder / "lit_model.pth.lora").write_bytes(b"")
        (folder / "hyperparameters.yaml").write_text("lora_r: 4\n")
    assert find_run(str(tmp_path)).endswith("step-000200")
    assert find_run(str(tmp_path), checkpoint=100).endswith("step-000100")
    assert find_run(str(tmp_path / "step-000100")).endswith("step-000100") and find_run(str(tmp_path / "x")) is None
    with pytest.raises(AdapterError, match=r"no step-000300 .found steps: 100, 200"):
        find_run(str(tmp_path), checkpoint=300)


def test_an_adapter_v2_run_is_refused_with_what_works(tmp_path) -> None:
    (tmp_path / "lit_model.pth.adapter_v2").write_bytes(b"")
    (tmp_path / "hyperparameters.yaml").write_text("{}\n")
    with pytest.raises(IncompatibleAdapterError, match=r"adapter_v2.*finetune_lora"):
        run_merge(ResolveRequest(str(tmp_path)), str(tmp_path / "merged"), quiet=True)


def test_the_pickled_checkpoint_needs_allow_pickle(base, tmp_path, capsys) -> None:
    from packager.cli.main import main

    run, _ = litgpt_runs.save_run(base, str(tmp_path / "out"), litgpt_runs.LORA)
    with pytest.raises(UnsafeFormatError, match="--allow-pickle"):
        run_merge(ResolveRequest(run, base=base), str(tmp_path / "merged"), quiet=True)
    assert main(["merge", "--adapter", run, "--base", base, "--output", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lit_model.pth.lora is a pickle" in err and err.count("\n") == 1
    assert not (tmp_path / "cli").exists()
    # the conversion the message gives, then no pickle is needed
    import subprocess
    import sys

    command = err.split("or convert it: ")[1].split(" in that folder")[0].replace("python ", sys.executable + " ", 1)
    subprocess.run(command, shell=True, check=True, cwd=os.path.join(run, "final"))
    assert main(["merge", "--adapter", run, "--base", base, "--output", str(tmp_path / "cli")]) == 0
