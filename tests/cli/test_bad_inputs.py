"""Every bad input: exit 2, one line on stderr naming the problem and the fix, no traceback, no output left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from packager.cli.main import main
from tests import models

QV = {"target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def adapter(bases, tmp_path_factory) -> str:
    return models.save_adapter(bases["llama"], str(tmp_path_factory.mktemp("a") / "adapter"), **QV)


def run_merge_cli(capsys, tmp_path, *args: str) -> tuple[int, str]:
    code = main(["merge", "--output", str(tmp_path / "out"), "--quiet", *args])
    err = capsys.readouterr().err
    return code, err


def assert_clean_failure(code: int, err: str, tmp_path, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    leftovers = [n for n in os.listdir(tmp_path) if n == "out" or n.startswith(".out.partial-")]
    assert not leftovers, leftovers


def copy_adapter(adapter: str, tmp_path, name: str = "bad") -> str:
    target = str(tmp_path / name)
    shutil.copytree(adapter, target)
    return target


def edit_config(adapter: str, **changes) -> None:
    path = os.path.join(adapter, "adapter_config.json")
    config = json.loads(Path(path).read_text())
    config.update(changes)
    Path(path).write_text(json.dumps(config))


def test_missing_adapter_config(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", str(tmp_path / "empty"))
    assert_clean_failure(code, err, tmp_path, "adapter_config.json", "checkpoint-N")


def test_adapter_folder_does_not_exist(tmp_path, capsys) -> None:
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", str(tmp_path / "nope"))
    assert_clean_failure(code, err, tmp_path, "does not exist")


def test_malformed_adapter_config(adapter, tmp_path, capsys) -> None:
    bad = copy_adapter(adapter, tmp_path)
    with open(os.path.join(bad, "adapter_config.json"), "w") as f:
        f.write('{"peft_type": "LORA", "r": ')
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "not valid JSON", "adapter_config.json")


def test_unknown_peft_type(adapter, tmp_path, capsys) -> None:
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, peft_type="MAGIC")
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "peft_type MAGIC", "merges (ADALORA", "serves unmerged (ADAPTION_PROMPT")


def test_a_prompt_tuning_config_over_lora_weights_is_refused_before_it_reaches_an_image(adapter, tmp_path, capsys):
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, peft_type="PROMPT_TUNING")
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "PROMPT_TUNING", "holds no prompt_embeddings", "re-save")


def test_missing_target_module(adapter, tmp_path, capsys) -> None:
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, target_modules=["q_proj", "query_key_value"])
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "query_key_value", "--base")


def test_adapter_for_another_architecture(adapter, bases, tmp_path, capsys) -> None:
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", adapter, "--base", bases["gpt2"])
    assert_clean_failure(code, err, tmp_path, "q_proj", "--base")


def test_shape_mismatch_names_the_module(adapter, bases, tmp_path, capsys) -> None:
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", adapter, "--base", bases["llama-wide"])
    assert_clean_failure(code, err, tmp_path, "model.layers.0.self_attn.q_proj", "do not fit", "--base")


def test_module_prefix_mismatch_is_refused(adapter, tmp_path, capsys) -> None:
    """Weights for modules the base lacks must not be dropped silently (vLLM #34186)."""
    from safetensors.torch import load_file, save_file

    bad = copy_adapter(adapter, tmp_path)
    path = os.path.join(bad, "adapter_model.safetensors")
    state = {k.replace("base_model.model.model.", "base_model.model.decoder."): v for k, v in load_file(path).items()}
    save_file(state, path)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "decoder.layers.0", "lacks")


def test_rank_in_config_disagrees_with_weights(adapter, tmp_path, capsys) -> None:
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, r=16)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "rank 16", "rank 4")


@pytest.mark.parametrize("which", ["adapter", "base"])
def test_truncated_safetensors(which, adapter, bases, tmp_path, capsys) -> None:
    bad_adapter = copy_adapter(adapter, tmp_path)
    base = str(tmp_path / "base")
    shutil.copytree(bases["llama"], base)
    target = (
        os.path.join(bad_adapter, "adapter_model.safetensors")
        if which == "adapter"
        else os.path.join(base, "model.safetensors")
    )
    size = os.path.getsize(target)
    with open(target, "r+b") as f:
        f.truncate(size - 1000)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad_adapter, "--base", base)
    assert_clean_failure(code, err, tmp_path, os.path.basename(target), "truncated")


def test_base_path_from_training_machine(adapter, tmp_path, capsys) -> None:
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, base_model_name_or_path="/root/autodl-tmp/models/llama-7b")
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "/root/autodl-tmp/models/llama-7b", "--base")


def test_hub_base_not_cached_while_offline(adapter, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, base_model_name_or_path="acme/never-downloaded")
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "acme/never-downloaded", "Hugging Face cache", "--base")


def test_no_base_named_anywhere(adapter, tmp_path, capsys) -> None:
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, base_model_name_or_path=None)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "names no base", "--base")


def test_pickle_adapter_refused_without_flag(bases, tmp_path, capsys) -> None:
    pickled = models.save_adapter(bases["llama"], str(tmp_path / "pickled"), safe_serialization=False, **QV)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", pickled)
    assert_clean_failure(code, err, tmp_path, "adapter_model.bin", "--allow-pickle")


def test_pickle_base_refused_without_flag(adapter, bases, tmp_path, capsys) -> None:
    base = str(tmp_path / "pickle-base")
    model = __import__("transformers").AutoModelForCausalLM.from_pretrained(bases["llama"])
    model.save_pretrained(base, safe_serialization=False)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", adapter, "--base", base)
    assert_clean_failure(code, err, tmp_path, "pytorch_model.bin", "--allow-pickle")


def test_existing_output_is_not_overwritten(adapter, tmp_path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["merge", "--adapter", adapter, "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--force" in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_existing_output_is_refused_before_torch_is_imported(adapter, tmp_path) -> None:
    """The user waits for `import torch` (~1 s) only when the command can run."""
    (tmp_path / "out").mkdir()
    probe = (
        "import sys; from packager.cli.main import main; "
        f"code = main(['merge', '--adapter', {adapter!r}, '--output', {str(tmp_path / 'out')!r}]); "
        "print(code, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["2", "False"]
    assert result.stderr.startswith("error: output") and "already exists" in result.stderr


def test_unknown_flag_value_is_one_line(adapter, tmp_path, capsys) -> None:
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", adapter, "--dtype", "int3")
    assert_clean_failure(code, err, tmp_path, "int3")


def test_broken_adapter_weights_fail_during_merge_and_leave_nothing(adapter, tmp_path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    bad = copy_adapter(adapter, tmp_path)
    path = os.path.join(bad, "adapter_model.safetensors")
    state = load_file(path)
    key = next(k for k in state if k.endswith("layers.1.self_attn.v_proj.lora_B.weight"))
    state[key][0, 0] = torch.nan
    save_file(state, path)
    code, err = run_merge_cli(capsys, tmp_path, "--adapter", bad)
    assert_clean_failure(code, err, tmp_path, "NaN", "layers.1.self_attn.v_proj")


def test_real_process_exit_code_and_stderr(adapter, tmp_path) -> None:
    bad = copy_adapter(adapter, tmp_path)
    edit_config(bad, base_model_name_or_path="/root/autodl-tmp/x")
    proc = subprocess.run(
        [sys.executable, "-m", "packager.cli.main", "merge", "--adapter", bad, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "out")
