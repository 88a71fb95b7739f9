#!/usr/bin/env python3
"""Checks the CI runner snippets in examples/ci/ with the parsers and schemas that install here.

- GitHub Actions workflow: the workflow JSON schema (check-jsonschema's vendored copy).
- GitLab Runner config.toml files: parsed as TOML; the keys execguard relies on are checked
  (GitLab publishes no schema for the runner's config).
- Actions Runner Controller: the runner pod template of the Helm values and the job-pod hook
  template, each made into a Pod and checked against the Kubernetes API schema
  (kubernetes-validate, offline).
- The DaemonSet (deploy/kubernetes/execguard.yaml): no privileged container, and the
  supervisor's capabilities exactly those of the systemd unit's CapabilityBoundingSet (the
  set measured to be needed); the API schema check is kubernetes-validate's, in scripts/test.sh.
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


def daemonset():
    root = CI.parent.parent
    path = root / "deploy" / "kubernetes" / "execguard.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    for c in containers:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            fail(path, f"container {c['name']} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(path, f"container {c['name']} allows privilege escalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(path, f"container {c['name']} does not drop all capabilities")
    unit = (root / "packaging" / "systemd" / "execguard.service").read_text()
    line = next(l for l in unit.splitlines() if l.startswith("CapabilityBoundingSet="))
    want = sorted(c.removeprefix("CAP_") for c in line.split("=", 1)[1].split())
    sup = next(c for c in spec["containers"] if c["name"] == "supervisor")
    got = sorted(sup["securityContext"]["capabilities"]["add"])
    if got != want:
        fail(path, f"the supervisor's capabilities {got} are not the measured set {want}")
    if not spec.get("hostPID"):
        fail(path, "the supervisor does not share the node's pid namespace")


def main():
    daemonset()
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
    print("examples/ci: workflow schema, runner configs and pod templates check out; "
          "the DaemonSet runs unprivileged with the measured capabilities")


if __name__ == "__main__":
    main()
