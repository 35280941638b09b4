#!/usr/bin/env python3
"""Renders a kustomization the way `kubectl kustomize` would, for the subset this repository
uses (resources, namespace, configMapGenerator with its behavior, labels, strategic-merge
patches), so that the manifests can be validated offline where no kustomize binary is
available.

Not rendered: the configMapGenerator's name hash suffix (names are kept as written).

Usage: kustomize_lite.py DIR > rendered.yaml
"""

import os
import sys

import yaml


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def merge(base, patch):
    """Strategic merge: maps merge key by key; lists of named maps merge by name; other lists
    and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        out = [dict(i) for i in base]
        for item in patch:
            for i, existing in enumerate(out):
                if existing["name"] == item["name"]:
                    out[i] = merge(existing, item)
                    break
            else:
                out.append(item)
        return out
    return patch


def render(directory):
    with open(os.path.join(directory, "kustomization.yaml"), encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    documents = []
    for resource in kustomization.get("resources", []):
        path = os.path.normpath(os.path.join(directory, resource))
        documents += render(path) if os.path.isdir(path) else load_documents(path)
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for file in generator.get("files", []):
            with open(os.path.join(directory, file), encoding="utf-8") as f:
                data[os.path.basename(file)] = f.read()
        # behavior: create (a new ConfigMap), replace (a base's, all its data) or merge (into a
        # base's, key by key).
        behavior = generator.get("behavior", "create")
        existing = [
            d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == generator["name"]
        ]
        if behavior == "create":
            if existing:
                sys.exit(f"{directory}: configMapGenerator {generator['name']} exists already (use behavior)")
            documents.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
            )
        elif behavior in ("replace", "merge"):
            if not existing:
                sys.exit(f"{directory}: configMapGenerator {generator['name']} has no ConfigMap to {behavior}")
            for document in existing:
                document["data"] = data if behavior == "replace" else {**document.get("data", {}), **data}
        else:
            sys.exit(f"{directory}: configMapGenerator {generator['name']}: unknown behavior {behavior}")
    if "namespace" in kustomization:
        for document in documents:
            document.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for label in kustomization.get("labels", []):
        for document in documents:
            document.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for patch in kustomization.get("patches", []):
        for change in load_documents(os.path.join(directory, patch["path"])):
            targets = [
                i
                for i, d in enumerate(documents)
                if d["kind"] == change["kind"] and d["metadata"]["name"] == change["metadata"]["name"]
            ]
            if not targets:
                sys.exit(f"{directory}: patch {patch['path']} matches no {change['kind']} {change['metadata']['name']}")
            for i in targets:
                documents[i] = merge(documents[i], change)
    return documents


if __name__ == "__main__":
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=False)
