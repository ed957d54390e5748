"""Each step's peak memory is stated in the plan before any work, and a step that cannot fit is refused then, with
the figure and the alternative (issue 17)."""

from __future__ import annotations

import dataclasses

import pytest

from packager.demo import build_adapter, build_base
from packager.errors import UserInputError
from packager.plan import StepMemory
from packager.planning.memory import RUNTIME_BYTES, available_memory, check_memory, plan_memory
from packager.planning.quantized import with_quantization
from packager.resolve.resolver import ResolveRequest, resolve
from tests import models


@pytest.fixture(scope="module")
def resolved(bases, tmp_path_factory):
    adapter = models.save_adapter(bases["llama"], str(tmp_path_factory.mktemp("mem") / "a"), target_modules=["q_proj"])
    return resolve(ResolveRequest(adapter, base=bases["llama"]))


def steps(plan, verify=True) -> dict[str, StepMemory]:
    return {s.step: s for s in plan_memory(plan, verify)}


def test_the_streaming_merge_is_planned_from_its_largest_tensors_not_the_model(resolved) -> None:
    plan = resolved.plan
    merge = steps(plan)["merge"]
    largest = max(t.nbytes for t in resolved.weights.tensors.values())
    assert RUNTIME_BYTES + 4 * largest <= merge.peak_bytes < RUNTIME_BYTES + 16 * largest
    doubled = dataclasses.replace(plan.merge, tensors=plan.merge.tensors * 2)  # twice the layers, same shapes
    assert steps(dataclasses.replace(plan, merge=doubled))["merge"].peak_bytes == merge.peak_bytes
    assert "verify" in steps(plan) and "verify" not in steps(plan, verify=False)


def test_peft_engine_and_parity_are_planned_from_the_whole_model(resolved) -> None:
    plan = dataclasses.replace(resolved.plan, merge=dataclasses.replace(resolved.plan.merge, engine="peft"))
    model = sum(t.nbytes for t in resolved.weights.tensors.values())
    assert steps(plan)["merge"].peak_bytes >= RUNTIME_BYTES + model
    assert steps(plan)["verify"].peak_bytes >= RUNTIME_BYTES + model


def test_a_quantized_merge_plans_the_quantizer_and_the_accuracy_pass(resolved, tmp_path) -> None:
    planned = steps(with_quantization(resolved, "w8a8").plan)
    assert {"merge", "quantize", "measure"} <= set(planned) and "verify" not in planned and "calibrate" not in planned
    base = build_base(str(tmp_path / "base"), seed=0, hidden_size=128)  # the demo's, with its tokenizer
    demo = resolve(ResolveRequest(build_adapter(base, str(tmp_path / "adapter"), seed=1)))
    calibrated = steps(with_quantization(demo, "w4a16", calibrate="").plan)
    widths = [t.shape[1] for t in demo.plan.merge.tensors if t.name.endswith("proj.weight")]
    hessians = 4 * (3 * min(widths) ** 2 + max(widths) ** 2)  # q/k/v, o, gate/up of the hidden width; down_proj's
    assert min(widths) == 128
    assert calibrated["calibrate"].peak_bytes > RUNTIME_BYTES + hessians


def test_a_step_that_cannot_fit_is_refused_with_the_figure_and_the_alternative() -> None:
    plan = (StepMemory("merge", 2 * 10**9, "streamed"), StepMemory("export", 30 * 10**9, "the fp32 graph ~4x"))
    check_memory(plan, available=40 * 10**9)
    with pytest.raises(UserInputError, match=r"the export step would need about 30\.0 GB of memory \(the fp32 graph "
                       r"~4x\) and this machine has 8\.0 GB available; serve the merge with vLLM"):  # fmt: skip
        check_memory(plan, available=8 * 10**9)
    check_memory((StepMemory("verify", 30 * 10**9, "the model"),), available=10**9)  # skipped, not refused


def test_the_machine_has_some_memory_available() -> None:
    assert 0 < available_memory() < 10**13
