"""`packager package-base` as a user meets it: the dry-run plan, the help, every bad input as one `error:` line
with exit 2, and a later shared-layout `package` that finds the recorded base-model image by itself."""

from __future__ import annotations

import json
import os

import pytest

from packager.cli.main import main
from packager.plan import files_key
from packager.planning.model_images import ModelImageRecord, remember_model_image
from packager.resolve.resolver import resolve_base

REFERENCE = f"127.0.0.1:5000/acme/demo-base@sha256:{'ab' * 32}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, str]:
    root = str(tmp_path_factory.mktemp("demo"))
    assert main(["demo", "--output", root, "--quiet"]) == 0
    return {"base": os.path.join(root, "base"), "adapter": os.path.join(root, "adapter")}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> str:
    """A private cache: the record written here must not reach other tests' shared-layout plans."""
    root = str(tmp_path / "cache")
    monkeypatch.setenv("PACKAGER_CACHE", root)
    return root


def assert_clean_failure(capsys, code: int, *needles: str) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def package_base(*flags: str) -> int:
    return main(["package-base", "--quiet", *flags])


def test_dry_run_json_has_one_layer_per_weight_file(demo, cache, tmp_path, capsys) -> None:
    work = tmp_path / "work"
    flags = ["--base", demo["base"], "--dry-run", "--json", "--from", "packager-modelbase:x", "--work", str(work)]
    assert package_base(*flags) == 0
    plan = json.loads(capsys.readouterr().out)
    names = sorted(os.listdir(demo["base"]))
    weights = [n for n in names if n.endswith(".safetensors")]
    assert weights and [layer["name"] for layer in plan["layers"]] == ["meta", *(f"weights/{w}" for w in weights)]
    for layer in plan["layers"][1:]:
        assert layer["bytes"] == os.path.getsize(os.path.join(demo["base"], layer["name"].removeprefix("weights/")))
    assert plan["runnable_image"] == "packager-modelbase:x"
    assert plan["tag"].startswith("packager/base-base:") and plan["push"] is False
    assert all(f["sha256"] for f in plan["base"]["files"])
    assert {f["path"] for f in plan["base"]["files"]} >= {"config.json", "tokenizer.json", *weights}
    assert not work.exists()  # a dry run writes nothing


def test_dry_run_text_lists_the_layers(demo, cache, capsys) -> None:
    assert package_base("--base", demo["base"], "--dry-run", "--tag", "acme/demo-base:1", "--from", "busy:1") == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "acme/demo-base:1" in out
    assert "layer meta:" in out and "layer weights/model.safetensors:" in out


def test_help_mentions_models_and_image_volume(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["package-base", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "/models" in out and "ImageVolume" in out
    for flag in ("--base", "--tag", "--push", "--from", "--max-layer-size", "--dry-run"):
        assert flag in out, flag


def test_package_base_is_listed_in_the_main_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "package-base" in capsys.readouterr().out


def test_a_missing_base_folder(tmp_path, cache, capsys) -> None:
    code = package_base("--base", str(tmp_path / "nope"), "--dry-run", "--from", "busy:1")
    assert_clean_failure(capsys, code, "nope", "does not exist", "--base")


def test_a_layer_above_the_cap(demo, cache, capsys) -> None:
    code = package_base("--base", demo["base"], "--dry-run", "--from", "busy:1", "--max-layer-size", "1KB")
    line = assert_clean_failure(capsys, code, "non-weight files", "--max-layer-size")
    assert "re-shard" not in line  # re-sharding cannot shrink the tokenizer and config


def test_a_weight_file_above_the_cap_is_split(demo, cache, tmp_path, capsys) -> None:
    cap = os.path.getsize(os.path.join(demo["base"], "model.safetensors")) - 1  # meta fits, the weights do not
    flags = ["--base", demo["base"], "--dry-run", "--json", "--from", "busy:1", "--max-layer-size", str(cap)]
    assert package_base(*flags, "--work", str(tmp_path)) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["split"] == ["model.safetensors"] and all(layer["bytes"] <= cap for layer in plan["layers"])
    assert [layer["name"] for layer in plan["layers"]][1:] == [
        "weights/model-part-00001-of-00002.safetensors",
        "weights/model-part-00002-of-00002.safetensors",
    ]


def test_a_tensor_above_the_cap_is_refused(demo, cache, capsys) -> None:
    cap = "50KB"  # the embedding alone (98 kB) is bigger; the non-weight files (15 kB) fit
    code = package_base("--base", demo["base"], "--dry-run", "--from", "busy:1", "--max-layer-size", cap)
    assert_clean_failure(capsys, code, "alone is", "a tensor cannot be split", "--max-layer-size")


def test_a_size_that_is_not_a_size(demo, cache, capsys) -> None:
    code = package_base("--base", demo["base"], "--dry-run", "--from", "busy:1", "--max-layer-size", "lots")
    assert_clean_failure(capsys, code, "--max-layer-size", "lots")


@pytest.mark.parametrize("flag", ["--tag", "--from"])
def test_an_invalid_image_reference(demo, cache, capsys, flag) -> None:
    flags = {"--from": "busy:1", flag: "UPPER/Case:1"}
    code = package_base("--base", demo["base"], "--dry-run", *(x for pair in flags.items() for x in pair))
    assert_clean_failure(capsys, code, "UPPER/Case:1", "not a valid image reference")


def _package_shared(demo: dict[str, str], tmp_path, *flags: str) -> int:
    return main(
        [
            "package",
            "--adapter",
            f"demo={demo['adapter']}",
            "--base",
            demo["base"],
            "--layout",
            "shared",
            "--base-image",
            "rt:1",
            "--work",
            str(tmp_path / "work"),
            "--dry-run",
            "--json",
            *flags,
        ]
    )


def test_shared_package_finds_the_recorded_base_image(demo, cache, tmp_path, capsys) -> None:
    assert _package_shared(demo, tmp_path) == 0
    assert json.loads(capsys.readouterr().out)["image"]["model_image"] == ""  # nothing recorded yet
    base = resolve_base(demo["base"])
    tag = "127.0.0.1:5000/acme/demo-base:1"
    remember_model_image(ModelImageRecord(REFERENCE, tag, base.label_id, files_key(base.files)))
    assert _package_shared(demo, tmp_path) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["image"]["model_image"] == REFERENCE
    assert not (tmp_path / "work").exists()


def test_an_explicit_base_model_image_wins(demo, cache, tmp_path, capsys) -> None:
    explicit = f"registry.example/team/base@sha256:{'cd' * 32}"
    assert _package_shared(demo, tmp_path, "--base-model-image", explicit) == 0
    assert json.loads(capsys.readouterr().out)["image"]["model_image"] == explicit


def test_a_base_model_image_without_a_digest_is_refused(demo, cache, tmp_path, capsys) -> None:
    code = _package_shared(demo, tmp_path, "--base-model-image", "127.0.0.1:5000/acme/demo-base:1")
    assert_clean_failure(capsys, code, "--base-model-image", "@sha256")
    assert not (tmp_path / "work").exists()


def _base_copy(demo, tmp_path, edit) -> str:
    """The demo base with its config.json rewritten by `edit` (a dict -> JSON text function)."""
    import shutil

    folder = tmp_path / "edited-base"
    shutil.copytree(demo["base"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(edit(config))
    return str(folder)


def test_a_config_without_tie_word_embeddings_is_planned(demo, cache, tmp_path, capsys) -> None:
    """Older hub configs (gpt2's) leave the key out; transformers then ties the embeddings."""
    folder = _base_copy(
        demo, tmp_path, lambda c: json.dumps({k: v for k, v in c.items() if k != "tie_word_embeddings"})
    )
    assert package_base("--base", folder, "--dry-run", "--json", "--from", "busy:1") == 0
    assert json.loads(capsys.readouterr().out)["base"]["fingerprint"]["tie_word_embeddings"] is True


@pytest.mark.parametrize("text", ["{", "[1]"])
def test_a_broken_config_is_one_line(demo, cache, tmp_path, capsys, text) -> None:
    folder = _base_copy(demo, tmp_path, lambda _c: text)
    assert_clean_failure(capsys, package_base("--base", folder, "--dry-run", "--from", "busy:1"), "config.json")


def test_package_base_quantize_dry_run_plans_the_quantized_base(demo, cache, tmp_path, capsys) -> None:
    flags = ["--base", demo["base"], "--dry-run", "--from", "busy:1", "--work", str(tmp_path / "work")]
    assert package_base(*flags, "--quantize", "fp8", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["quantization"] == "fp8" and len(plan["source_files_key"]) == 64
    assert not (tmp_path / "work").exists()  # a dry run quantizes nothing
    assert package_base(*flags, "--quantize", "fp8") == 0
    assert "quantize: fp8 first" in capsys.readouterr().out
    assert_clean_failure(capsys, package_base(*flags, "--quantize", "int4"), "--quantize", "int4")


def test_a_shared_package_on_a_quantized_base_finds_the_recorded_image_or_plans_to_make_it(
    demo, cache, tmp_path, capsys
) -> None:
    from packager.planning.quantized import quantized_key
    from packager.quantize.plan import plan_folder_quantization

    assert _package_shared(demo, tmp_path, "--quantize", "fp8") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["quantize"]["preset"] == "FP8_DYNAMIC" and plan["image"]["model_image"] == ""
    assert plan["image"]["base_source"] == str((tmp_path / "work" / "base-fp8").resolve())  # made at render
    assert plan["image"]["runtime"]["engine"] == "vllm"
    base = resolve_base(demo["base"])
    key = quantized_key(base.files, plan_folder_quantization(demo["base"], "fp8"))
    files = ({"path": "model.safetensors", "size": 1, "sha256": "ef" * 32},)
    tag = "127.0.0.1:5000/acme/demo-base-fp8:1"
    remember_model_image(ModelImageRecord(REFERENCE, tag, base.label_id, key, files))
    assert _package_shared(demo, tmp_path, "--quantize", "fp8") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["image"]["model_image"] == REFERENCE
    assert [f["sha256"] for f in plan["base"]["files"]] == ["ef" * 32]  # what pods mount: the quantized files
    assert _package_shared(demo, tmp_path) == 0  # the 16-bit base is another image: not this record
    assert json.loads(capsys.readouterr().out)["image"]["model_image"] == ""


def test_lora_on_a_w8a8_base_is_refused_on_cpu(demo, cache, tmp_path, capsys) -> None:
    code = _package_shared(demo, tmp_path, "--quantize", "w8a8")
    assert_clean_failure(capsys, code, "LoRA adapters on a base quantized with it", "--quantize fp8 on CPU")
