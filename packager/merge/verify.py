"""Parity: the merged model must answer like base + adapter through PEFT (logits on fixed inputs)."""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass

import torch

from packager.architecture.load_report import folder_report
from packager.errors import ParityError
from packager.merge.reference import compute_dtype, load_peft_model, reference_name, simulates_4bit, stored_dtype
from packager.planning.memory import DEFAULT_MAX_VERIFY_BYTES  # noqa: F401 - re-exported
from packager.resolve.resolver import Resolved
from packager.tasks import ModelTask

# Unmerged (x@W + x@A^T@B^T*s) and merged (x@(W+dW)) forwards differ by rounding only; relative to the
# largest logit, these bounds hold for correct merges and fail by orders of magnitude for wrong ones.
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


@dataclass(frozen=True)
class ParityReport:
    """The merged model's logits against the reference's: the largest difference, its limit, top-1 agreement."""

    dtype: str
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    top1_agreement: float
    passed: bool
    reference: str = "PEFT on the base as stored"

    def summary(self) -> str:
        """One line: ok or FAILED, the difference against its limit, top-1 agreement and the reference."""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"parity {verdict}: max |logits diff| {self.max_abs_diff:.3g} (limit {self.tolerance:.3g}, "
            f"{self.dtype}), top-1 agreement {self.top1_agreement:.1%}; reference: {self.reference}"
        )


def fixed_inputs(vocab_size: int, batch: int = 2, length: int = 24) -> torch.Tensor:
    """Deterministic token ids covering the whole vocabulary range, including its last (maybe new) id."""
    generator = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab_size, (batch, length), generator=generator)
    ids[0, -1] = vocab_size - 1
    return ids


def check_parity(resolved: Resolved, merged_dir: str) -> ParityReport:
    """Compare logits of PeftModel(base, adapter) with the merged model; raise ParityError past tolerance."""
    report = measure_parity(resolved, merged_dir)
    if not report.passed:
        raise ParityError(
            f"merged model does not match base + adapter: {report.summary()}; report this with the adapter config"
        )
    return report


def measure_parity(resolved: Resolved, merged_dir: str) -> ParityReport:
    """Compare logits of PEFT on base + adapter with the merged model on fixed inputs; a mismatch is reported,
    not raised (`check_parity` raises)."""
    dtype = compute_dtype(resolved)
    task = resolved.plan.task
    reference_model = load_peft_model(resolved, dtype)
    vocab = reference_model.get_input_embeddings().weight.shape[0]
    inputs = image_inputs(resolved.plan.base.path) if task.name == "IMAGE_TEXT_TO_TEXT" else parity_inputs(task, vocab)
    reference = model_outputs(reference_model, inputs)
    del reference_model
    gc.collect()
    merged = model_outputs(load_merged(merged_dir, dtype, task), inputs)
    diff = (reference - merged).abs().max().item()
    scale = max(1.0, reference.abs().max().item())
    tolerance = _relative_tolerance(resolved, dtype) * scale
    agreement = (reference.argmax(-1) == merged.argmax(-1)).float().mean().item()
    name = str(dtype).removeprefix("torch.")
    return ParityReport(name, diff, scale, tolerance, agreement, diff <= tolerance, reference_name(resolved))


def _relative_tolerance(resolved: Resolved, dtype: torch.dtype) -> float:
    """The merged dtype's bound; a 4-bit reference keeps its unquantized layers in the stored dtype, so the
    looser of the two applies."""
    dtypes = (dtype, stored_dtype(resolved)) if simulates_4bit(resolved) else (dtype,)
    return max(RELATIVE_TOLERANCE.get(d, 6e-2) for d in dtypes)


def parity_inputs(task: ModelTask, vocab_size: int) -> dict[str, torch.Tensor]:
    """The inputs the task's model takes: token ids with an attention mask that pads the second row (encoders
    must ignore padding), plus decoder ids for an encoder-decoder."""
    ids = fixed_inputs(vocab_size)
    inputs = {"input_ids": ids}
    if task.name != "CAUSAL_LM":
        mask = torch.ones_like(ids)
        mask[1, -6:] = 0
        inputs["attention_mask"] = mask
    if task.name == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = fixed_inputs(vocab_size, length=8)
    return inputs


def image_inputs(base_path: str) -> dict[str, torch.Tensor]:
    """A vision-language model's inputs through its own processor: one chat turn with a fixed synthetic image,
    so a LoRA on the vision tower is checked as well as one on the language model."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base_path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    pixels = bytes((x * 7 + y * 13 + c * 50) % 256 for y in range(48) for x in range(64) for c in range(3))
    inputs = processor(text=prompt, images=[Image.frombytes("RGB", (64, 48), pixels)], return_tensors="pt")
    return {k: v for k, v in inputs.items() if k != "token_type_ids"}


@torch.inference_mode()
def model_outputs(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the model answers, as one float tensor: logits, start/end logits (QA) or hidden states (embeddings)."""
    model.eval()
    if _needs_one_row_at_a_time(model, inputs):
        rows = [{"input_ids": ids[mask.bool()][None]} for ids, mask in zip(*_ids_and_mask(inputs), strict=True)]
        return torch.cat([model_outputs(model, row) for row in rows])
    output = model(**{k: v.to(model.dtype) if v.is_floating_point() else v for k, v in inputs.items()})
    if getattr(output, "logits", None) is not None:
        return output.logits.float()
    if getattr(output, "start_logits", None) is not None:
        return torch.stack([output.start_logits, output.end_logits], -1).float()
    return output.last_hidden_state.float()


def _needs_one_row_at_a_time(model, inputs: dict[str, torch.Tensor]) -> bool:
    """A decoder classifier without a pad_token_id finds no last token in a padded batch (transformers refuses
    batches then): such a model is checked one unpadded row at a time."""
    classifier = type(model).__name__.endswith("ForSequenceClassification")  # PeftModelFor... too
    pad = getattr(getattr(model, "config", None), "pad_token_id", 0)
    return classifier and pad is None and inputs["input_ids"].shape[0] > 1


def _ids_and_mask(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return inputs["input_ids"], inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))


def load_merged(path: str, dtype: torch.dtype, task: ModelTask):
    """The merged model in the plan's class; ParityError unless every weight it needs came from the files."""
    check_loads_cleanly(path, task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return task.model_class().from_pretrained(path, dtype=dtype)


def check_loads_cleanly(path: str, task: ModelTask) -> None:
    """Refuse a merged folder with a missing, unexpected or mis-shaped weight in the plan's class, which
    transformers would otherwise fill at random or drop. Reads the config and the safetensors headers, no
    weight (tests/merge/test_memory.py measures it)."""
    report = folder_report(path, task)
    found = [
        f"{kind}: {', '.join(map(str, names[:3]))}"
        for kind, names in (
            ("missing", report.missing),
            ("unexpected", report.unexpected),
            ("mis-shaped", [f"{n} {list(s)} (built {list(b)})" for n, s, b in report.mismatched]),
        )
        if names
    ]
    if found:
        raise ParityError(
            f"the merged model at {path} does not load cleanly as {task.auto_class} ({'; '.join(found)}); "
            "nothing was written; report this with the adapter config"
        )
