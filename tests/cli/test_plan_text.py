"""`package --dry-run` reads at a glance (issue 24, item 6): a summary block first, the figures the manifests
carry, one line per meaning (the merge and the serving engine no longer both say `engine:`), no raw JSON, and a
parity check the merge would skip is not planned for."""

from __future__ import annotations

import pytest
import yaml

from packager.cli.main import main
from tests.sparse_models import LLAMA3, save_lora_by_hand, save_sparse_llama


@pytest.fixture(scope="module")
def llama_8b(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("plan-text")
    hidden, intermediate, layers, heads, kv, vocab = LLAMA3["8b"]
    base = str(root / "base")
    save_sparse_llama(base, hidden, intermediate, layers, vocab, heads=heads, kv_heads=kv, context=8192)
    return base, save_lora_by_hand(str(root / "lora"), base, hidden, layers, targets=("q_proj",))


def test_the_summary_comes_first_and_says_each_thing_once(llama_8b, capsys) -> None:
    base, adapter = llama_8b
    assert main(["package", "--adapter", f"chat={adapter}", "--base", base, "--layout", "baked", "--dry-run"]) == 0
    text = capsys.readouterr().out
    summary = text.split("\ndetails\n")[0].splitlines()
    keys = [line[2:11].strip() for line in summary[1:] if line[2:11].strip()]
    assert keys == ["reads", "makes", "serves", "costs", "image", "deploys"]
    assert text.count("engine:") == 0 and "merge:   stream" in text and "why vllm:" in text
    assert "runtime: vLLM" in text and "{" not in text.split("runtime: ")[1].splitlines()[0], "no raw runtime.json"
    machine = text.split("this machine:")[1].splitlines()[0]
    assert "verify" not in machine, "an 8B's parity check is skipped: not planned"
    assert "1 base file not pinned yet" in text


def test_the_summary_asks_what_the_manifests_ask(llama_8b, capsys) -> None:
    """The plan once said `memory 3.0 GiB` where the manifests asked 4Gi: both now print the manifests' figure."""
    from packager.deploy.render import render_manifests
    from packager.deployment import DeploySpec
    from packager.planning.job import plan_package
    from packager.sizes import Target
    from tests.requests import package_request

    base, adapter = llama_8b
    argv = ["package", "--adapter", f"chat={adapter}", "--base", base, "--layout", "baked", "--device", "cuda"]
    assert main([*argv, "--dry-run"]) == 0
    costs = next(line for line in capsys.readouterr().out.splitlines() if "each pod:" in line)
    request = package_request((("chat", adapter),), "baked", "", "acme/chat:1", base=base, device="cuda",
                             target=Target(), verify=False, deploy=DeploySpec(("kubernetes",)))  # fmt: skip
    plan = plan_package(request).plan
    deployment = next(d for d in yaml.safe_load_all(render_manifests(plan, "acme/chat:1")["kubernetes.yaml"])
                      if d and d["kind"] == "Deployment")  # fmt: skip
    requests = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert f"memory {requests['memory']}" in costs and f"{requests['nvidia.com/gpu']} GPU(s)" in costs
