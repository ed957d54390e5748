"""The ML-BOM every build context (and image) carries: valid CycloneDX 1.6, the models as machine-learning-model
components with every file's sha256 as the lock pins it, the runtime's packages as pypi purls, the runtime base
image and the lock itself; the same inputs give the same bytes; `packager sbom` prints it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from packager.bom import BOM_FILE
from packager.cli.main import main
from packager.image.context import ModelFiles, write_context
from packager.image.runtime_images import image_packages
from packager.plan import AdapterSpec, FileEntry, ServedAdapter
from tests import plans


def _model(tmp_path: Path) -> ModelFiles:
    folder = tmp_path / "merged"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in (("model.safetensors", b"w" * 1000), ("config.json", b"{}")):
        (folder / name).write_bytes(data)
        files.append(FileEntry(name, len(data), hashlib.sha256(data).hexdigest()))
    return ModelFiles(str(folder), tuple(files))


def _baked(tmp_path: Path, name: str = "ctx") -> tuple[dict, str, Path]:
    model = _model(tmp_path)
    context = write_context(plans.baked(), str(tmp_path / name), model, model.files)
    text = Path(context.path, BOM_FILE).read_text()
    return json.loads(text), text, Path(context.path)


def _components(bom: dict) -> dict[str, dict]:
    """Every component by bom-ref, nested ones included."""
    found: dict[str, dict] = {}
    stack = list(bom.get("components", []))
    while stack:
        component = stack.pop()
        found[component["bom-ref"]] = component
        stack.extend(component.get("components", []))
    return found


def _sha(component: dict) -> str | None:
    return next((h["content"] for h in component.get("hashes", []) if h["alg"] == "SHA-256"), None)


def test_a_baked_context_carries_a_valid_cyclonedx_16_bom_of_what_the_lock_pins(tmp_path) -> None:
    bom, text, context = _baked(tmp_path)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert bom["specVersion"] == "1.6" and bom["metadata"]["component"]["type"] == "container"
    assert (context / "config/opt/packager" / BOM_FILE).read_text() == text, "the image holds the same file"
    lock_text = (context / "packager.lock.json").read_text()
    lock, parts = json.loads(lock_text), _components(bom)
    models = {ref for ref, c in parts.items() if c["type"] == "machine-learning-model"}
    assert models == {"base", "adapter", "served"}
    for ref, section in (("base", lock["base"]), ("adapter", lock["adapter"]), ("served", lock["output"])):
        pinned = {f["path"]: f["sha256"] for f in section["files"] if f.get("sha256")}
        assert {p: _sha(parts[f"{ref}/{p}"]) for p in pinned} == pinned, ref
    assert _sha(parts["lock"]) == hashlib.sha256(lock_text.encode()).hexdigest()
    purls = {c["purl"] for c in parts.values() if c["type"] == "library"}
    expected = {str(PackageURL("pypi", None, *p.split("=="))) for p in image_packages(plans.baked().image)}
    assert purls == expected and any(p.startswith("pkg:pypi/torch@") for p in purls)
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in bom["dependencies"]}
    assert graph["served"] == {"base", "adapter"} and {"served", "runtime-base-image", "lock"} <= graph["image"]
    base = parts["base"]
    assert base["name"] == lock["base"]["repo_id"] and base["version"] == (
        lock["base"]["revision"] or lock["base"]["commit"]
    )


def test_the_same_inputs_give_the_same_bom_and_a_changed_file_another(tmp_path) -> None:
    first, text, _ = _baked(tmp_path / "a")
    _, again, _ = _baked(tmp_path / "b")
    assert text == again, "no timestamp, no random serial number"
    assert "timestamp" not in first["metadata"] and first["serialNumber"].startswith("urn:uuid:")
    (tmp_path / "c").mkdir()
    model = _model(tmp_path / "c")
    Path(model.folder, "config.json").write_bytes(b'{"x": 1}')
    changed = (FileEntry("config.json", 8, hashlib.sha256(b'{"x": 1}').hexdigest()), model.files[0])
    context = write_context(plans.baked(), str(tmp_path / "c" / "ctx"), ModelFiles(model.folder, changed), changed)
    other = json.loads(Path(context.path, BOM_FILE).read_text())
    assert other["serialNumber"] != first["serialNumber"]


def _adapter(folder: Path, name: str) -> ServedAdapter:
    """A LoRA adapter folder whose model card declares its licence."""
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: peft\n---\n# An adapter\n")
    entries = []
    for file, data in (("adapter_config.json", b'{"peft_type": "LORA"}'), ("adapter_model.safetensors", name.encode())):
        (folder / file).write_bytes(data)
        entries.append(FileEntry(file, len(data), hashlib.sha256(data).hexdigest()))
    return ServedAdapter(name, AdapterSpec(str(folder), None, "LORA", {}, tuple(entries)))


def test_a_shared_bom_names_each_served_adapter_and_the_licence_its_card_declares(tmp_path) -> None:
    served = (_adapter(tmp_path / "sql", "sql"), _adapter(tmp_path / "chat", "chat"))
    context = write_context(plans.shared(served), str(tmp_path / "ctx"))
    text = Path(context.path, BOM_FILE).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    parts = _components(json.loads(text))
    for adapter in served:
        assert parts[f"served:{adapter.name}"]["type"] == "machine-learning-model"
        source = parts[f"adapter:{adapter.name}"]
        assert source["licenses"] == [{"license": {"name": "apache-2.0"}}]
        weights = next(f for f in adapter.spec.files if f.path == "adapter_model.safetensors")
        assert _sha(parts[f"adapter:{adapter.name}/adapter_model.safetensors"]) == weights.sha256
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in json.loads(text)["dependencies"]}
    assert graph["served:sql"] == {"base", "adapter:sql"}


def test_packager_sbom_prints_a_contexts_bom_and_refuses_a_folder_without_one(tmp_path, capsys) -> None:
    _, text, context = _baked(tmp_path)
    assert main(["sbom", str(context)]) == 0 and capsys.readouterr().out == text
    assert main(["sbom", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and BOM_FILE in err


@pytest.mark.parametrize("reference", ["a/b:1", "127.0.0.1:5000/acme/demo:1.0", "x@sha256:" + "a" * 64])
def test_container_references_split_into_name_and_version(reference) -> None:
    from packager.bom import _container

    component = _container(reference, "ref")
    assert (component.name + (f":{component.version}" if component.version else "")) == reference
