"""Kyverno's CRD schemas, offline: the npm package @kubernetes-models/kyverno (2.0.0) carries a validator
generated from Kyverno's CRDs (kyverno.io/v1 ClusterPolicy among them); `validate_policy` runs it with node.

Like the API server, the CRD schema checks types, enums and required fields; unknown fields are pruned, not
refused, so the golden file pins the spelling."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

PACKAGE = "@kubernetes-models/kyverno@2.0.0"
ROOT = Path(__file__).resolve().parents[2] / ".node"
SCRIPT = """
import { ClusterPolicy } from "@kubernetes-models/kyverno/kyverno.io/v1/ClusterPolicy";
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  try { new ClusterPolicy(JSON.parse(input)).validate(); console.log("valid"); }
  catch (e) { console.log(e.message); process.exit(1); }
});
"""


def ensure_validator() -> Path:
    """Install the package under .node/ once (npm registry); returns the script that validates stdin."""
    script = ROOT / "validate-cluster-policy.mjs"
    if not (ROOT / "node_modules" / "@kubernetes-models" / "kyverno").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is needed to validate Kyverno policies offline"
        ROOT.mkdir(exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(ROOT), "--no-audit", "--no-fund", PACKAGE], check=True,
                       capture_output=True, timeout=600)  # fmt: skip
    script.write_text(SCRIPT)
    return script


def validate_policy(document: dict) -> str:
    """'valid', or the schema's complaint (a ClusterPolicy document)."""
    script = ensure_validator()
    done = subprocess.run(["node", str(script)], input=json.dumps(document), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    return (done.stdout + done.stderr).strip()
