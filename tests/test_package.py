"""The package step's pure decisions: builder choice and adapter arguments."""

from __future__ import annotations

import os

import pytest

from packager.builders import choose_builder
from packager.formats.folders import parse_adapter_arg


@pytest.mark.parametrize(
    ("requested", "push", "expected"),
    [
        ("auto", True, "oci"),
        ("auto", False, "docker"),
        ("docker", True, "docker"),
        ("buildah", False, "buildah"),
    ],
)
def test_auto_builder_pushes_with_oci_and_builds_locally_with_docker(requested, push, expected) -> None:
    assert choose_builder(requested, push) == expected


def test_adapter_arguments(tmp_path) -> None:
    assert parse_adapter_arg("sql=/models/sql-lora") == ("sql", "/models/sql-lora")
    folder = tmp_path / "My Adapter v2"
    folder.mkdir()
    assert parse_adapter_arg(str(folder)) == ("My-Adapter-v2", str(folder))
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_adapter_arg(str(odd))[1] == str(odd)  # an existing folder with '=' in its name is a path


def test_load_time_quantization_is_explained_to_whoever_runs_the_image() -> None:
    from packager.artefact.spec import artefact_spec, load_time_note

    assert load_time_note(artefact_spec("w8a8")) == []
    (note,) = load_time_note(artefact_spec("bnb-nf4", layout="shared"))
    assert note.startswith("bnb-nf4: the weights are quantized by the runtime") and "exits with code 4" in note


def test_render_resolves_once_and_never_reads_the_lock_back(demo_adapter, tmp_path, monkeypatch) -> None:
    import builtins
    import json
    import os

    from packager.package import render_job
    from packager.planning import job as job_module
    from packager.planning.job import plan_package
    from tests.requests import package_request

    calls, reads = [], []
    real_resolve, real_open = job_module.resolve, builtins.open
    monkeypatch.setattr(job_module, "resolve", lambda request: calls.append(request) or real_resolve(request))

    def spy_open(file, mode="r", *args, **kwargs):
        if "packager.lock.json" in str(file) and "r" in mode and "+" not in mode:
            reads.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    request = package_request(
        (("demo", demo_adapter),),
        "baked",
        "packager-runtime:x",
        "acme/demo:1",
        work=str(tmp_path / "work"),
        verify=False,
        quiet=True,
    )
    monkeypatch.setattr(builtins, "open", spy_open)
    rendered = render_job(plan_package(request), request, log=lambda _l: None)
    monkeypatch.setattr(builtins, "open", real_open)
    assert len(calls) == 1 and reads == []
    runtime_path = os.path.join(rendered.context.path, "config/opt/packager/runtime.json")
    with open(runtime_path) as f:
        assert json.load(f) == rendered.plan.image.runtime.to_json()
    assert rendered.context.lock["base"]["files"][-1]["sha256"]  # the merge pinned the base's weights


def test_a_shared_render_pins_every_base_file_the_dry_run_left(demo_adapter, tmp_path, monkeypatch) -> None:
    """The plan reads no weight; the render hashes what the lock pins (in parallel) and samples each file for the
    image's start-up check."""
    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "cache"))  # no digest remembered from another test
    from packager.package import render_job
    from packager.planning.job import plan_package
    from tests.requests import package_request

    request = package_request((("demo", demo_adapter),), "shared", "packager-runtime:x", "acme/demo:1",
                             work=str(tmp_path / "work"), verify=False, quiet=True)  # fmt: skip
    job = plan_package(request)
    assert any(f.sha256 is None for f in job.plan.base.files)
    rendered = render_job(job, request, log=lambda _l: None)
    files = rendered.context.lock["base"]["files"]
    assert all(f["sha256"] for f in files), "every file pinned"
    assert all(f.get("sample_sha256") for f in files if f["path"].endswith(".safetensors")), "weights: sampled too"
    assert "pin" in rendered.timings


def test_dry_run_prints_the_whole_plan_and_writes_nothing(demo_adapter, tmp_path, capsys, monkeypatch) -> None:
    import json

    monkeypatch.setenv("PACKAGER_CACHE", str(tmp_path / "cache"))  # no digest remembered from another test

    from packager.cli.main import main

    work = tmp_path / "work"
    code = main(
        [
            "package",
            "--adapter",
            f"demo={demo_adapter}",
            "--layout",
            "shared",
            "--base-image",
            "rt:1",
            "--tag",
            "127.0.0.1:5000/acme/demo:1",
            "--push",
            "--work",
            str(work),
            "--dry-run",
            "--json",
        ]
    )
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and not work.exists()
    assert plan["merge"] is None and plan["image"]["builder"] == "oci" and plan["image"]["reproducible"] is True
    assert plan["image"]["runtime"]["adapters"] == {"demo": "/adapters/demo"} and plan["served"][0]["name"] == "demo"
    weights = [f for f in plan["base"]["files"] if f["path"].endswith(".safetensors")]
    assert weights and all(f["sha256"] is None for f in weights), "a dry run reads no weight: pinned at render"
    code = main(
        [
            "package",
            "--adapter",
            demo_adapter,
            "--layout",
            "baked",
            "--base-image",
            "rt:1",
            "--work",
            str(work),
            "--dry-run",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "dry run" in text and "merge:   stream" in text and "docker builder" in text
    assert not work.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tag", "Bad Tag"], "not a valid image reference"),
        (["--base-image", "x:1\nRUN id"], "not a valid image reference"),
        (["--port", "70000"], "port 70000 is out of range"),
        (["--push", "--tag", "acme/demo:1"], "--push needs a tag that names a registry"),
    ],
)
def test_bad_image_flags_are_refused_before_any_work(flags, message, demo_adapter, tmp_path, capsys) -> None:
    from packager.cli.main import main

    work = tmp_path / "work"
    args = ["package", "--adapter", demo_adapter, "--layout", "baked", "--base-image", "rt:1", "--work", str(work)]
    code = main([*args, "--dry-run", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not work.exists()


def test_tokenizer_and_chat_template_files_are_pinned_for_base_and_adapter(demo_adapter, tmp_path) -> None:
    import shutil

    from packager.resolve.resolver import ResolveRequest, resolve

    adapter = shutil.copytree(demo_adapter, tmp_path / "adapter")
    (adapter / "chat_template.json").write_text('{"chat_template": "{{ messages }}"}')
    (adapter / "README.md").write_text("not shipped")
    plan = resolve(ResolveRequest(str(adapter))).plan
    assert {"adapter_config.json", "adapter_model.safetensors", "chat_template.json"} <= {
        f.path for f in plan.adapter.files
    }
    assert "README.md" not in {f.path for f in plan.adapter.files}
    base = {f.path: f.sha256 for f in plan.base.files}
    assert base["tokenizer.json"] and base["tokenizer_config.json"] and base["config.json"]


def test_a_vllm_plan_sizes_the_lora_slots_and_names_its_engine(tmp_path, capsys) -> None:
    import json

    from packager.cli.main import main
    from packager.demo import build_adapter, build_base

    base = build_base(str(tmp_path / "base"), hidden_size=128)  # head size 32: one vLLM's CPU kernels have
    sql, chat = build_adapter(base, str(tmp_path / "sql"), r=8), build_adapter(base, str(tmp_path / "chat"), r=12)
    args = [
        "package",
        "--adapter",
        f"sql={sql}",
        "--adapter",
        f"chat={chat}",
        "--layout",
        "shared",
        "--base-image",
        "packager-vllm:x",
        "--tag",
        "acme/team:1",
        "--runtime",
        "auto",
        "--dry-run",
        "--json",
    ]
    assert main(args) == 0
    image = json.loads(capsys.readouterr().out)["image"]
    assert image["runtime"]["engine"] == "vllm" and "text generation" in image["engine_reason"]
    assert image["runtime"]["vllm"] == {
        "dtype": "float32",
        "max_model_len": 256,
        "base_name": "base",
        "max_lora_rank": 16,
        "max_loras": 3,
        "device": "cpu",
        "quantization": None,
        "kv_cache_space_gib": 1,  # one 256-token sequence, sized by the plan
    }


def test_a_cuda_plan_starts_from_vllms_gpu_image_and_quantizes_at_load(tmp_path, capsys) -> None:
    import json

    from packager.cli.main import main
    from packager.demo import build_adapter, build_base

    base = build_base(str(tmp_path / "base"), hidden_size=64)  # head size 16: fine for the GPU kernels
    adapter = build_adapter(base, str(tmp_path / "sql"), r=8)
    args = [
        "package",
        "--adapter",
        f"sql={adapter}",
        "--layout",
        "baked",
        "--runtime",
        "auto",
        "--device",
        "cuda",
        "--quantize",
        "bnb-nf4",
        "--dry-run",
        "--json",
    ]
    assert main(args) == 0
    image = json.loads(capsys.readouterr().out)["image"]
    assert image["base_image"] == "vllm/vllm-openai:v0.32.0" and image["device"] == "cuda"
    vllm = image["runtime"]["vllm"]
    assert image["runtime"]["engine"] == "vllm" and vllm["quantization"] == "bitsandbytes"
    assert vllm["device"] == "cuda"
    assert main([*args[:-2], "--runtime", "packager", "--dry-run", "--json"]) == 0
    image = json.loads(capsys.readouterr().out)["image"]  # packager's server: PyTorch's CUDA image, stack installed
    assert image["base_image"].startswith("pytorch/pytorch:") and "bitsandbytes==0.50.2" in image["runtime_packages"]


def test_the_base_never_answers_to_an_adapters_name(demo_adapter, capsys) -> None:
    import json

    from packager.cli.main import main

    args = [
        "package",
        "--adapter",
        f"base={demo_adapter}",
        "--layout",
        "shared",
        "--base-image",
        "rt:1",
        "--dry-run",
        "--json",
    ]
    assert main(args) == 0
    vllm = json.loads(capsys.readouterr().out)["image"]["runtime"]["vllm"]
    assert vllm["base_name"] == "base-base"  # the demo base's folder is called base, like the adapter


def test_package_takes_a_runs_chosen_checkpoint(demo_adapter, tmp_path, capsys) -> None:
    import json
    import shutil

    from packager.cli.main import main

    for step in (5, 9):
        shutil.copytree(demo_adapter, tmp_path / "run" / f"checkpoint-{step}")
    args = ["package", "--adapter", f"demo={tmp_path / 'run'}", "--layout", "baked", "--dry-run", "--json"]
    args += ["--base-image", "packager-runtime:x", "--runtime", "packager"]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["adapter"]["checkpoint"] == 9  # the newest
    assert main([*args, "--checkpoint", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["adapter"]["checkpoint"] == 5


def test_a_base_whose_tokenizer_vllm_would_misread_is_planned_on_packagers_server(tmp_path) -> None:
    """The tokenizers the image serves are checked at plan time: the demo base's, saved as a GGUF conversion
    saves a byte-level BPE (named LlamaTokenizerFast), goes to packager's server under --runtime auto."""
    import json

    from packager.demo import build_demo
    from packager.planning.job import plan_package
    from tests.requests import package_request

    base, adapter = build_demo(str(tmp_path / "demo"))
    work = str(tmp_path / "w")
    request = package_request((("demo", adapter),), "baked", "runtime:x", "acme/demo:1", work=work, quiet=True)
    assert plan_package(request).plan.image.engine == "vllm"
    config_path, tokenizer_path = (os.path.join(base, name) for name in ("tokenizer_config.json", "tokenizer.json"))
    with open(config_path) as f:
        config = {**json.load(f), "tokenizer_class": "LlamaTokenizerFast"}
    with open(tokenizer_path) as f:
        tokenizer = {**json.load(f), "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}
    for path, data in ((config_path, config), (tokenizer_path, tokenizer)):
        with open(path, "w") as f:
            json.dump(data, f)
    image = plan_package(request).plan.image
    assert image.engine == "packager" and "byte-level BPE" in image.engine_reason
