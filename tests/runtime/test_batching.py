"""Batched generation answers each request as it is answered alone: greedy tokens equal (fp32), for every kind of
model and adapter packager's server serves, mixed in one batch or grouped, with prompts of different lengths,
different lengths asked, stop strings, and rows that join a running batch."""

from __future__ import annotations

import threading

import adapters as adapterhub
import pytest
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig

from packager.runtime.batch_limits import BatchLimits
from packager.runtime.continuous import ContinuousScheduler
from packager.runtime.grouped import GroupedScheduler
from packager.runtime.models import Engine, GenerationParams
from tests import adapterhub_saves, families
from tests.runtime.serving import Wrapped, load

PROMPTS = [
    "The quick brown fox",
    "Hello",
    "packaging adapters for serving is where people get stuck, and batching is where servers get fast",
    "a b c",
    "w5 w9 w12 w40",
]
LENGTHS = [8, 5, 12, 3, 9]
ALONE = BatchLimits(max_batch_size=1)


def _requests(names: list[str]) -> list[tuple[str, str, GenerationParams]]:
    """Requests cycling through the served names, each with its own prompt length and max_tokens."""
    return [
        (names[i % len(names)], PROMPTS[i % len(PROMPTS)], GenerationParams(max_tokens=LENGTHS[i % 5], temperature=0))
        for i in range(2 * len(PROMPTS))
    ]


@pytest.fixture(scope="module")
def served(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """runtime.json objects, by what they exercise."""
    root = tmp_path_factory.mktemp("batching")
    base = tiny["base"]

    def peft(name: str, config, seed: int) -> str:
        return families.save_task_adapter(base, str(root / name), "CAUSAL_LM", config, seed=seed)

    ia3 = {"target_modules": ["q_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
    shared = {"layout": "shared", "base_dir": base, "lock": tiny["lock"]}
    t5 = families.save_word_tokenizer(
        families.save_base("t5", "T5ForConditionalGeneration", str(root / "t5")), vocab_size=100, specials_last=True
    )
    bottleneck = adapterhub_saves.save(base, str(root / "bn"), adapterhub.SeqBnConfig(reduction_factor=4), seed=2)
    return {
        "merged": {"layout": "baked", "model_dir": tiny["merged"], "served_name": "m"},
        "lora-mixed": {**shared, "adapters": {"alpha": tiny["adapter_a"], "beta": tiny["adapter_b"]}},
        "lora-and-dora-grouped": {
            **shared,
            "adapters": {
                "alpha": tiny["adapter_a"],
                "dora": peft(
                    "dora", LoraConfig(r=4, target_modules=["q_proj"], use_dora=True, init_lora_weights=False), 5
                ),
            },
        },
        "ia3-grouped": {
            **shared,
            "adapters": {
                "one": peft("ia3-1", IA3Config(task_type="CAUSAL_LM", init_ia3_weights=False, **ia3), 3),
                "two": peft("ia3-2", IA3Config(task_type="CAUSAL_LM", init_ia3_weights=False, **ia3), 4),
            },
        },
        "prompt-tuning-mixed": {
            **shared,
            "adapters": {
                "six": peft("pt-6", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6), 6),
                "three": peft("pt-3", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3), 7),
            },
        },
        "prefix-generate": {
            "layout": "baked",
            "model_dir": base,
            "served_name": "p",
            "adapter_dir": peft("prefix", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4), 8),
        },
        "t5-generate": {
            "layout": "baked",
            "model_dir": t5,
            "served_name": "t5",
            "task": "SEQ_2_SEQ_LM",
            "model_class": "AutoModelForSeq2SeqLM",
        },
        "adapterhub-generate": {
            "layout": "baked",
            "model_dir": base,
            "served_name": "bn",
            "adapter_dir": bottleneck,
            "adapter_library": "adapters",
        },
    }


SCHEDULERS = {
    "merged": ("merged", ContinuousScheduler),
    "lora-mixed": ("mixed", ContinuousScheduler),
    "lora-and-dora-grouped": ("grouped", ContinuousScheduler),
    "ia3-grouped": ("grouped", ContinuousScheduler),
    "prompt-tuning-mixed": ("prompt", ContinuousScheduler),
    "prefix-generate": (None, GroupedScheduler),
    "t5-generate": (None, GroupedScheduler),
    "adapterhub-generate": (None, GroupedScheduler),
}


def together(engine: Engine, requests: list) -> list[list[int]]:
    """Every request queued before the scheduler may take any (it waits on the lock held here), then read."""
    with engine.scheduler.changed:
        rows = [engine.submit(name, engine.encode_prompt(name, prompt), params) for name, prompt, params in requests]
    return [[token for ids in row.stream() for token in ids] for row in rows]


def one_by_one(engine: Engine, requests: list) -> list[list[int]]:
    """Each request alone: submitted after the one before has finished."""
    return [together(engine, [request])[0] for request in requests]


@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_each_request_in_a_batch_answers_as_it_does_alone(served, kind, tmp_path) -> None:
    engine, alone = load(served[kind], tmp_path), load(served[kind], tmp_path, ALONE)
    mode, scheduler = SCHEDULERS[kind]
    assert type(engine.scheduler) is scheduler and getattr(engine.scheduler, "mode", None) == mode
    requests = _requests(engine.names)
    expected = one_by_one(alone, requests)
    assert alone.scheduler.stats.batch_rows == alone.scheduler.stats.batches, "alone means one row per pass"
    assert together(engine, requests) == expected
    stats = engine.scheduler.stats
    assert stats.batch_rows > stats.batches, "the requests must have shared passes, or this proves nothing"
    if len(engine.names) > 1:
        answers = {
            name: tuple(t) for (name, prompt, _), t in zip(requests, expected, strict=True) if prompt == PROMPTS[0]
        }
        assert len(set(answers.values())) == len(answers), "the adapters must answer differently"


def test_rows_join_a_running_batch_and_leave_it_as_they_finish(served, tmp_path) -> None:
    engine, alone = load(served["lora-mixed"], tmp_path), load(served["lora-mixed"], tmp_path, ALONE)
    first = ("alpha", PROMPTS[2], GenerationParams(max_tokens=40, temperature=0))
    later = _requests(engine.names)[:4]
    row = engine.submit("alpha", engine.encode_prompt("alpha", first[1]), first[2])
    stream = row.stream()
    head = next(stream)  # the batch is running
    rest = together(engine, later)
    assert head + [t for ids in stream for t in ids] == one_by_one(alone, [first])[0]
    assert rest == one_by_one(alone, later)
    assert engine.scheduler.rows == [] and engine.scheduler.cache is None, "finished rows free their place"


def test_stop_strings_and_seeds_hold_per_row(served, tmp_path) -> None:
    engine = load(served["merged"], tmp_path)
    greedy = together(engine, [("m", PROMPTS[0], GenerationParams(max_tokens=12, temperature=0))])[0]
    decode = engine.tokenizers["m"].decode
    stop = next(s for i in range(3, 12) if (s := decode(greedy[i - 1 : i + 1])) not in decode(greedy[:i]))
    sampled = GenerationParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    requests = [
        ("m", PROMPTS[0], GenerationParams(max_tokens=12, temperature=0, stop=(stop,))),
        ("m", PROMPTS[1], sampled),
    ]
    requests += [("m", PROMPTS[3], GenerationParams(max_tokens=10, temperature=1.0))] * 3
    batched = together(engine, requests)
    alone = one_by_one(load(served["merged"], tmp_path, ALONE), requests[:2])
    assert batched[:2] == alone, "a stop string and a seed give the same answer in a batch as alone"
    stopped = engine.tokenizers["m"].decode(batched[0], skip_special_tokens=True)
    assert stop in stopped and len(batched[0]) < 12


def test_a_cancelled_row_leaves_the_batch_and_its_neighbours_go_on(served, tmp_path) -> None:
    engine, alone = load(served["merged"], tmp_path), load(served["merged"], tmp_path, ALONE)
    long = GenerationParams(max_tokens=60, temperature=0)
    with engine.scheduler.changed:
        gone = engine.stream("m", engine.encode_prompt("m", PROMPTS[0]), long)
        staying = engine.submit("m", engine.encode_prompt("m", PROMPTS[1]), long)
    next(gone), next(gone)
    gone.close()  # the client went away
    kept = [t for ids in staying.stream() for t in ids]
    assert kept == one_by_one(alone, [("m", PROMPTS[1], long)])[0]
    assert len(kept) == 60 and engine.scheduler.stats.batch_rows < 2 * 61, "the cancelled row stopped early"


def test_a_failed_pass_fails_its_rows_and_the_server_goes_on(served, tmp_path) -> None:
    engine = load(served["merged"], tmp_path)
    real, calls = engine.scheduler.net, []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    engine.scheduler.net = Wrapped(real, broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.generate("m", engine.encode_prompt("m", PROMPTS[0]), GenerationParams(max_tokens=4, temperature=0))
    again = engine.generate("m", engine.encode_prompt("m", PROMPTS[0]), GenerationParams(max_tokens=4, temperature=0))
    assert again.completion_tokens == 4


def test_many_threads_get_their_own_answers(served, tmp_path) -> None:
    engine, alone = load(served["lora-mixed"], tmp_path), load(served["lora-mixed"], tmp_path, ALONE)
    requests = _requests(engine.names)
    expected = dict(zip(range(len(requests)), one_by_one(alone, requests), strict=True))
    answers: dict[int, list[int]] = {}

    def ask(i: int) -> None:
        name, prompt, params = requests[i % len(requests)]
        answers[i] = [
            t for ids in engine.submit(name, engine.encode_prompt(name, prompt), params).stream() for t in ids
        ]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answers[i] == expected[i % len(requests)] for i in range(60))
