"""Which transformers class a job's model is, decided once: `--task`, else the adapter's PEFT `task_type`, else the
base's `architectures`. Every step that builds or loads the model (architecture check, PEFT reference, parity,
merge fallback, quantize, QLoRA, export, serving) takes the class from the plan's task, through this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packager.errors import UserInputError

# task -> (transformers Auto class, what the served model does)
TASKS: dict[str, tuple[str, str]] = {
    "CAUSAL_LM": ("AutoModelForCausalLM", "text generation"),
    "SEQ_2_SEQ_LM": ("AutoModelForSeq2SeqLM", "text-to-text generation (encoder-decoder)"),
    "SEQ_CLS": ("AutoModelForSequenceClassification", "sequence classification"),
    "TOKEN_CLS": ("AutoModelForTokenClassification", "token classification"),
    "QUESTION_ANS": ("AutoModelForQuestionAnswering", "extractive question answering"),
    "FEATURE_EXTRACTION": ("AutoModel", "embeddings"),
    "MASKED_LM": ("AutoModelForMaskedLM", "masked-token prediction"),
    "IMAGE_TEXT_TO_TEXT": ("AutoModelForImageTextToText", "chat about images (vision-language)"),
}
# the end of a base's architecture name -> its task (the first match wins)
ARCHITECTURE_ENDINGS = (
    ("ForCausalLM", "CAUSAL_LM"),
    ("LMHeadModel", "CAUSAL_LM"),
    ("ForSequenceClassification", "SEQ_CLS"),
    ("ForTokenClassification", "TOKEN_CLS"),
    ("ForQuestionAnswering", "QUESTION_ANS"),
    ("ForMaskedLM", "MASKED_LM"),
    ("ForConditionalGeneration", "SEQ_2_SEQ_LM"),  # or IMAGE_TEXT_TO_TEXT when the config has a vision tower
    ("ForImageTextToText", "IMAGE_TEXT_TO_TEXT"),
    ("Model", "FEATURE_EXTRACTION"),
)


@dataclass(frozen=True)
class ModelTask:
    """The task a job's model serves, the transformers Auto class it is built with, and why."""

    name: str = "CAUSAL_LM"
    auto_class: str = "AutoModelForCausalLM"
    reason: str = "the default"

    @property
    def generates(self) -> bool:
        """Whether the model generates text (causal, seq2seq or vision-language)."""
        return self.name in ("CAUSAL_LM", "SEQ_2_SEQ_LM", "IMAGE_TEXT_TO_TEXT")

    def model_class(self) -> Any:
        """The transformers Auto class itself (imports transformers)."""
        import transformers

        return getattr(transformers, self.auto_class)


def choose_task(override: str | None, adapter_config: dict[str, Any], base_config: dict[str, Any]) -> ModelTask:
    """The job's task: --task, else the adapter's task_type, else the base's architectures; one line if unknown."""
    if override:
        return _task(override.upper(), f"--task {override}", "--task")
    named = adapter_config.get("task_type")
    from_base = base_task(base_config)
    if isinstance(named, str) and named.upper() in TASKS:
        task = named.upper()
        if task == "CAUSAL_LM" and from_base in ("IMAGE_TEXT_TO_TEXT", "SEQ_2_SEQ_LM"):
            return _task(from_base, f"the base is {_architecture(base_config)} (the adapter says CAUSAL_LM)", "")
        return _task(task, f"the adapter's task_type {named}", "")
    if named:
        raise UserInputError(
            f"the adapter's task_type {named!r} is not one packager builds; pass --task with one of {_names()}"
        )
    if from_base:
        return _task(from_base, f"the base's architecture {_architecture(base_config)}", "")
    return ModelTask(reason="neither the adapter nor the base names a task: a causal LM (--task sets another)")


def base_task(config: dict[str, Any]) -> str | None:
    """The task the base's own architecture names, or None."""
    architecture = _architecture(config)
    for ending, task in ARCHITECTURE_ENDINGS:
        if architecture.endswith(ending):
            vision = "vision_config" in config or "vision_tower" in config
            return "IMAGE_TEXT_TO_TEXT" if task == "SEQ_2_SEQ_LM" and vision else task
    return None


def _task(name: str, reason: str, flag: str) -> ModelTask:
    if name not in TASKS:
        raise UserInputError(f"unknown {flag or 'task'} {name!r}; use one of {_names()}")
    return ModelTask(name, TASKS[name][0], reason)


def _architecture(config: dict[str, Any]) -> str:
    architectures = config.get("architectures") or [""]
    return str(architectures[0])


def _names() -> str:
    return ", ".join(TASKS)
