"""The deploy/ examples: valid against the Kubernetes schemas (kubernetes-validate, offline) and GitHub's workflow
schema (check-jsonschema's built-in copy), and consistent with how `--shard auto` reads its environment."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gcrsync.sync.shard import Shard

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = ["kubernetes-cronjob.yaml", "kubernetes-indexed-job.yaml", "kubernetes-indexed-cronjob.yaml"]
WORKFLOWS = sorted((DEPLOY / "github-actions").glob("*.yml"))
K8S_VERSION = "1.33.0"  # backoffLimitPerIndex is GA from 1.33; the oldest version the examples are checked against


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def validate(doc: dict[str, Any]) -> None:
    for version in (K8S_VERSION, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", K8S)
def test_kubernetes_manifests_are_valid(name: str) -> None:
    for doc in docs(name):
        validate(doc)


def test_the_validator_does_reject_a_broken_manifest() -> None:
    job = next(d for d in docs("kubernetes-indexed-job.yaml") if d["kind"] == "Job")
    for broken in ({"backoffLimitPerIndx": 2}, {"completions": "four"}):  # a typo; a wrong type
        doc = copy.deepcopy(job)
        doc["spec"].update(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(doc)


def job_spec(name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs(name) if d["kind"] in ("Job", "CronJob")]
    return doc["spec"] if doc["kind"] == "Job" else doc["spec"]["jobTemplate"]["spec"]


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    (container,) = spec["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.mark.parametrize("name", ["kubernetes-indexed-job.yaml", "kubernetes-indexed-cronjob.yaml"])
def test_indexed_job_runs_every_shard_once(name: str) -> None:
    spec = job_spec(name)
    assert spec["completionMode"] == "Indexed" and spec["backoffLimitPerIndex"] >= 1
    assert 1 <= spec["parallelism"] <= spec["completions"]
    env = env_of(spec)
    (container,) = spec["template"]["spec"]["containers"]
    assert "--shard auto" in " ".join(container["args"])
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {"secretRef": {"name": "gcrsync"}} in container["envFrom"]
    # What each pod's `--shard auto` resolves to, with the index Kubernetes gives it: every shard exactly once.
    shards = {Shard.parse("auto", {**env, "JOB_COMPLETION_INDEX": str(i)}) for i in range(spec["completions"])}
    assert shards == {Shard(i, spec["completions"]) for i in range(spec["completions"])}


def test_the_cronjob_wraps_the_indexed_job() -> None:
    job, wrapped = job_spec("kubernetes-indexed-job.yaml"), job_spec("kubernetes-indexed-cronjob.yaml")
    assert {k: v for k, v in job.items() if k != "ttlSecondsAfterFinished"} == wrapped
    (cron,) = docs("kubernetes-indexed-cronjob.yaml")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_no_credential_in_any_manifest() -> None:
    secrets = [d for d in docs("kubernetes-indexed-job.yaml") if d["kind"] == "Secret"]
    assert secrets and all(not d.get("stringData") and not d.get("data") for d in secrets)
    for name in K8S:
        for doc in docs(name):
            spec = doc["spec"] if doc["kind"] == "Job" else doc.get("spec", {}).get("jobTemplate", {}).get("spec")
            if spec:
                assert not {"GCRSYNC_DEST_CREDS", "GCR_MIRROR_TOKEN", "GCRSYNC_SRC_CREDS"} & set(env_of(spec))
    for workflow in WORKFLOWS:
        for line in workflow.read_text().splitlines():
            if any(v in line for v in ("_CREDS:", "_TOKEN:")):
                assert "${{ secrets." in line, line


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_are_valid(workflow: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(workflow)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_schema_check_does_reject_a_broken_workflow(tmp_path: Path) -> None:
    doc = yaml.safe_load((DEPLOY / "github-actions" / "mirror-sharded.yml").read_text())
    doc["jobs"]["shard"]["strategy"]["fail-fast"] = "sometimes"  # must be a boolean
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(broken)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout


def test_the_matrix_covers_every_shard() -> None:
    doc = yaml.safe_load((DEPLOY / "github-actions" / "mirror-sharded.yml").read_text())
    shard = doc["jobs"]["shard"]
    (sync,) = [s for s in shard["steps"] if s.get("name") == "sync"]
    count = int(sync["env"]["GCRSYNC_SHARD_COUNT"])
    assert shard["strategy"]["matrix"]["shard"] == list(range(count)) and "--shard auto" in sync["run"]
    assert shard["strategy"]["fail-fast"] is False
    assert "merge-reports" in " ".join(s.get("run", "") for s in doc["jobs"]["summary"]["steps"])
