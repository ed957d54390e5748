"""--calibrate: GPTQ, layer by layer, in the merge's stream and in `packager quantize`; the same weights either way,
different from round-to-nearest, and every way the calibration text can be wrong refused in one line (issue 17)."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file

from packager.artefact.make import make_artefact
from packager.artefact.spec import artefact_spec
from packager.cli.main import main
from packager.demo import build_adapter, build_base
from packager.errors import UserInputError
from packager.merge.run import run_merge
from packager.quantize.calibrate import calibration_text
from packager.resolve.resolver import ResolveRequest

pytestmark = pytest.mark.slow
QUIET = {"log": lambda _line: None}


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, str]:
    """A tiny Llama (hidden 128, with the demo tokenizer) + LoRA: merged plain, by RTN and by GPTQ (streamed)."""
    root = tmp_path_factory.mktemp("calibrate")
    base = build_base(str(root / "base"), seed=0, hidden_size=128)
    adapter = build_adapter(base, str(root / "adapter"), seed=1)
    folders = {name: str(root / name) for name in ("merged", "rtn", "gptq")}
    run_merge(ResolveRequest(adapter), folders["merged"], verify=False, quiet=True)
    run_merge(ResolveRequest(adapter), folders["rtn"], quantize="w4a16", quiet=True)
    run_merge(ResolveRequest(adapter), folders["gptq"], quantize="w4a16", calibrate="", quiet=True)
    return folders


def test_the_streamed_gptq_merge_differs_from_round_to_nearest_in_the_weights_only(made) -> None:
    rtn, gptq = load_file(f"{made['rtn']}/model.safetensors"), load_file(f"{made['gptq']}/model.safetensors")
    assert rtn.keys() == gptq.keys()
    packed = [k for k in rtn if k.endswith("weight_packed")]
    assert packed and all(not torch.equal(rtn[k], gptq[k]) for k in packed)  # every quantized weight moved
    assert all(torch.equal(rtn[k], gptq[k]) for k in rtn if not k.endswith("weight_packed"))  # scales: the observer's
    configs = [read_json(f"{made[k]}/config.json")["quantization_config"] for k in ("rtn", "gptq")]
    assert configs[0] == configs[1]  # the same format: vLLM loads either the same way
    assert not os.path.exists(f"{made['gptq']}/.gptq")  # the spill is gone
    lock = read_json(f"{made['gptq']}/packager.lock.json")
    assert lock["quantize"]["calibration"] == ""  # the shipped text


def test_packager_quantize_calibrated_on_the_merged_folder_writes_the_same(made, tmp_path) -> None:
    """GPTQ on the merge made again from base + adapter (streamed) and on the written merge: the same inputs, so
    the same weights."""
    spec = artefact_spec("w4a16", calibrate="")
    report = make_artefact(made["merged"], spec, str(tmp_path / "q"), False, **QUIET)
    ours, streamed = load_file(f"{tmp_path}/q/model.safetensors"), load_file(f"{made['gptq']}/model.safetensors")
    assert ours.keys() == streamed.keys() and all(torch.equal(ours[k], streamed[k]) for k in ours)
    assert report.accuracy is not None


def test_a_jsonl_calibration_text_and_its_mistakes(tmp_path) -> None:
    good = tmp_path / "calib.jsonl"
    good.write_text('{"text": "first"}\n\n{"text": "second"}\n')
    assert calibration_text(str(good)) == "first\n\nsecond"
    assert len(calibration_text()) > 8000  # the shipped one
    for body, words in (('{"text": 1}\n', 'has no "text" string'), ("not json\n", "is not JSON")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(body)
        with pytest.raises(UserInputError, match=words):
            calibration_text(str(bad))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--quantize", "fp8", "--calibrate"], "fp8 is round-to-nearest only"),
        (["--quantize", "w4a16", "--calibrate", "/nope.txt"], r"--calibrate /nope\.txt is not a file"),
        (["--calibrate"], r"--calibrate runs GPTQ for --quantize w8a8\|w8a16\|w4a16 in"),
    ],
)
def test_calibration_mistakes_are_one_line_before_any_work(made, tmp_path, capsys, flags, words) -> None:
    adapter = read_json(f"{made['merged']}/packager.lock.json")["adapter"]["path"]
    code = main(["merge", "--adapter", adapter, "--output", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(words, err) and not (tmp_path / "out").exists()


def test_a_model_without_a_tokenizer_cannot_be_calibrated_and_is_refused_before_any_work(bases, tmp_path) -> None:
    from tests import models

    adapter = models.save_adapter(bases["llama"], str(tmp_path / "adapter"), target_modules=["q_proj"])
    with pytest.raises(UserInputError, match=r"--calibrate reads its text through the model's tokenizer.*has none"):
        run_merge(ResolveRequest(adapter, base=bases["llama"]), str(tmp_path / "out"), quantize="w8a8", calibrate="")
    assert not (tmp_path / "out").exists()


def test_a_calibration_text_shorter_than_one_sequence_is_refused(made, tmp_path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("too short to calibrate anything")
    spec = artefact_spec("w4a16", calibrate=str(short))
    with pytest.raises(UserInputError, match=r"the calibration text has \d+ tokens; GPTQ needs at least 256"):
        make_artefact(made["merged"], spec, str(tmp_path / "q"), False, **QUIET)
    assert not (tmp_path / "q").exists()
