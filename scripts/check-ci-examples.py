#!/usr/bin/env python3
"""Checks the CI runner snippets in examples/ci/ with the parsers and schemas that install here.

- GitHub Actions workflow: the workflow JSON schema (check-jsonschema's vendored copy).
- GitLab Runner config.toml files: parsed as TOML; the keys execguard relies on are checked
  (GitLab publishes no schema for the runner's config).
- Actions Runner Controller: the runner pod template of the Helm values and the job-pod hook
  template, each made into a Pod and checked against the Kubernetes API schema
  (kubernetes-validate, offline).
Exits non-zero on the first problem, naming the file.
"""
import json
import pathlib
import subprocess
import sys
import tempfile
import tomllib

import yaml

CI = pathlib.Path(__file__).resolve().parent.parent / "examples" / "ci"


def fail(path, msg):
    sys.exit(f"{path}: {msg}")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}{r.stderr}")


def gitlab_runner(name, executor, want):
    path = CI / name
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    runners = doc.get("runners") or fail(path, "no [[runners]]")
    r = runners[0]
    if r.get("executor") != executor:
        fail(path, f"executor is {r.get('executor')!r}, expected {executor!r}")
    for keys, value in want:
        node = r
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node != value:
            fail(path, f"{'.'.join(keys)} is {node!r}, expected {value!r}")


def pod(name, metadata, spec):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, **(metadata or {})}, "spec": spec}


def main():
    run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows",
         CI / "github-workflow.yml", CI / "github-hosted.yml"])
    wf = yaml.safe_load((CI / "github-workflow.yml").read_text())
    opts = wf["jobs"]["build"]["container"]["options"]
    if "--runtime execguard-" not in opts:
        fail(CI / "github-workflow.yml", "the job container does not choose an execguard runtime")

    gitlab_runner("gitlab-runner-docker.toml", "docker",
                  [(["docker", "runtime"], "execguard-enforce")])
    gitlab_runner("gitlab-runner-kubernetes.toml", "kubernetes",
                  [(["kubernetes", "runtime_class_name"], "execguard"),
                   (["kubernetes", "pod_annotations", "execguard.io/mode"], "enforce")])

    values = yaml.safe_load((CI / "arc-runner-scale-set-values.yaml").read_text())
    job = yaml.safe_load((CI / "arc-job-template.yaml").read_text())
    pods = [pod("arc-runner", values["template"].get("metadata"), values["template"]["spec"]),
            pod("arc-job", job.get("metadata"),
                {**job["spec"], "containers": [{"name": "job", "image": "debian:12"}]})]
    for p in pods:
        if p["spec"].get("runtimeClassName") != "execguard":
            fail(CI, f"{p['metadata']['name']}: no execguard runtimeClassName")
    with tempfile.TemporaryDirectory() as d:
        files = []
        for p in pods:
            f = pathlib.Path(d) / f"{p['metadata']['name']}.yaml"
            f.write_text(yaml.safe_dump(p))
            files.append(f)
        run(["kubernetes-validate", "--strict", *files])
    print("examples/ci: workflow schema, runner configs and pod templates check out")


if __name__ == "__main__":
    main()
