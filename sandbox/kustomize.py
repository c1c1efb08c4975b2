"""The subset of ``kustomize build`` the Flux stand-in needs to "apply" a path of the sandbox GitOps repository.

Supported (kustomize ``kustomization.yaml``, kubectl.docs.kubernetes.io "Kustomization" reference): ``resources``
(and the deprecated ``bases``): YAML files and directories holding a ``kustomization.yaml``, recursively; ``images``
(``name`` -> ``newName``/``newTag``/``digest``) on the containers and init containers of pod templates; ``namespace``
(set on every namespaced object); ``labels``/``commonLabels`` on ``metadata.labels``. Patches, generators, components,
replacements and helm charts are ignored; remote resources are refused. A directory without a kustomization file
is rendered from all its ``.yaml``/``.yml`` files, as kustomize-controller generates one.

Errors are ``BuildError`` with a message in kustomize's words, which the Flux stand-in reports as ``BuildFailed``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_DEPTH = 20
# kinds that have no namespace (the common ones; kustomize reads them from its built-in schema)
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "APIService", "IngressClass", "RuntimeClass", "Node",
}  # fmt: skip
POD_SPEC_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"), ("spec",))


class BuildError(Exception):
    """The path does not build; ``str(e)`` is the message Flux puts on the Ready condition."""


class PathNotFound(BuildError):
    """The Kustomization's ``spec.path`` is not a directory of the revision (Flux reason ``ArtifactFailed``)."""


@dataclass
class Snapshot:
    """The files of one revision: ``files`` (repo paths) and ``read(path) -> bytes``."""

    files: set[str]
    read: Callable[[str], bytes]
    dirs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for f in self.files:
            parts = f.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                self.dirs.add("/".join(parts[:i]))
        self.dirs.add("")

    @classmethod
    def from_repo(cls, repos: Any, project: str, sha: str) -> Snapshot:
        """The tree of commit ``sha`` in a ``fixloop.sandbox.repos.RepoStore``; blobs are read on demand."""
        files = {e.path for e in repos.tree(project, sha, "", recursive=True) if e.type == "blob"}

        def read(path: str) -> bytes:
            data = repos.read(project, sha, path)
            if data is None:
                raise BuildError(f"open {path}: no such file or directory")
            return data

        return cls(files=files, read=read)

    @classmethod
    def from_files(cls, files: dict[str, str]) -> Snapshot:
        return cls(files=set(files), read=lambda p: files[p].encode())

    def listdir(self, path: str) -> list[str]:
        prefix = f"{path}/" if path else ""
        return sorted(f for f in self.files if f.startswith(prefix))


def load_yaml_documents(data: bytes, name: str) -> list[Any]:
    """The non-empty documents of a YAML stream; ``BuildError`` naming ``name`` if it does not parse."""
    try:
        return [d for d in YAML(typ="safe", pure=True).load_all(data.decode("utf-8")) if d is not None]
    except (YAMLError, UnicodeDecodeError, ValueError) as e:
        detail = " ".join(str(e).split())[:400]
        raise BuildError(f"failed to parse {name}: {detail}") from None


def _norm(base: str, ref: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://", ref) or ref.startswith(("github.com/", "git@")):
        raise BuildError(f"remote resource {ref!r} is not supported")
    joined = posixpath.normpath(posixpath.join(base, ref.strip()))
    if joined == ".":
        return ""
    if joined.startswith("../") or joined == ".." or joined.startswith("/"):
        raise BuildError(f"security; file '{ref}' is not in or below the repository root")
    return joined


def build(snapshot: Snapshot, path: str) -> list[dict[str, Any]]:
    """``kustomize build <path>`` of the subset above: the rendered objects, in resource order.
    ``PathNotFound`` if ``path`` is no directory; ``BuildError`` for anything that does not build."""
    root = _norm("", path or ".")
    if root not in snapshot.dirs:
        raise PathNotFound(f"kustomization path not found: stat {path}: no such file or directory")
    objects = _build_dir(snapshot, root, depth=0, stack=())
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        key = (obj["apiVersion"].split("/")[0], obj["kind"], obj["metadata"].get("namespace") or "", obj["name"])
        if key in seen:
            raise BuildError(
                f"may not add resource with an already registered id: {obj['kind']}.{obj['apiVersion']}/"
                f"{obj['metadata']['name']}.{key[2] or '[noNs]'}"
            )
        seen.add(key)
    return [o["obj"] for o in objects]


def _build_dir(snapshot: Snapshot, directory: str, depth: int, stack: tuple[str, ...]) -> list[dict[str, Any]]:
    if depth > MAX_DEPTH or directory in stack:
        raise BuildError(f"cycle detected: accumulating resources from '{directory}'")
    kfile = next(
        (posixpath.join(directory, n) for n in KUSTOMIZATION_FILES if posixpath.join(directory, n) in snapshot.files),
        None,
    )
    if kfile is None:  # kustomize-controller generates a kustomization of every manifest below the path
        out: list[dict[str, Any]] = []
        for f in snapshot.listdir(directory):
            if f.endswith((".yaml", ".yml")):
                out.extend(_load_resources(snapshot, f))
        return out
    docs = load_yaml_documents(snapshot.read(kfile), kfile)
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict):
        raise BuildError(f"invalid Kustomization {kfile}: not a mapping")
    refs = list(spec.get("resources") or []) + list(spec.get("bases") or [])
    objects: list[dict[str, Any]] = []
    for ref in refs:
        if not isinstance(ref, str):
            raise BuildError(f"invalid Kustomization {kfile}: resources must be a list of strings")
        target = _norm(directory, ref)
        if target in snapshot.files:
            objects.extend(_load_resources(snapshot, target))
        elif target in snapshot.dirs:
            try:
                objects.extend(_build_dir(snapshot, target, depth + 1, (*stack, directory)))
            except PathNotFound as e:
                raise BuildError(str(e)) from None
            except BuildError as e:
                raise BuildError(f"accumulating resources from '{ref}': {e}") from None
        else:
            raise BuildError(
                f"accumulating resources: accumulation err='accumulating resources from '{ref}': "
                f"evalsymlink failure on '{target}' : lstat {target}: no such file or directory'"
            )
    _transform(objects, spec, kfile)
    return objects


def _load_resources(snapshot: Snapshot, path: str) -> list[dict[str, Any]]:
    out = []
    for doc in load_yaml_documents(snapshot.read(path), path):
        if not isinstance(doc, dict):
            raise BuildError(f"{path}: a resource must be a mapping")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            items = doc["items"]
        else:
            items = [doc]
        for item in items:
            meta = item.get("metadata") if isinstance(item, dict) else None
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
                raise BuildError(f"{path}: missing metadata.name in object {str(item)[:120]}")
            if not isinstance(item.get("apiVersion"), str) or not isinstance(item.get("kind"), str):
                raise BuildError(f"{path}: missing apiVersion or kind in object {meta['name']!r}")
            out.append({"obj": item, "apiVersion": item["apiVersion"], "kind": item["kind"], "name": meta["name"],
                        "metadata": meta})  # fmt: skip
    return out


def _transform(objects: list[dict[str, Any]], spec: dict[str, Any], kfile: str) -> None:
    namespace = spec.get("namespace")
    labels: dict[str, str] = dict(spec.get("commonLabels") or {})
    for entry in spec.get("labels") or []:
        if isinstance(entry, dict):
            labels.update(entry.get("pairs") or {})
    images = spec.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in images):
        raise BuildError(f"invalid Kustomization {kfile}: images must be a list of {{name, newName, newTag, digest}}")
    for o in objects:
        obj = o["obj"]
        if namespace and o["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = str(namespace)
        if labels:
            obj["metadata"].setdefault("labels", {}).update({str(k): str(v) for k, v in labels.items()})
        for container in containers(obj):
            if isinstance(container.get("image"), str):
                container["image"] = set_image(container["image"], images)


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers and init containers of a workload's pod spec (Deployment, StatefulSet, Job, CronJob, Pod)."""
    for path in POD_SPEC_PATHS:
        node: Any = obj
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and ("containers" in node or "initContainers" in node):
            found = list(node.get("initContainers") or []) + list(node.get("containers") or [])
            return [c for c in found if isinstance(c, dict)]
    return []


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@digest`` -> (name, tag, digest)."""
    name, _, digest = ref.partition("@")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def set_image(ref: str, images: list[dict[str, Any]]) -> str:
    """kustomize's image transformer: the first ``images`` entry whose ``name`` equals the image name wins."""
    name, tag, digest = split_image(ref)
    for rule in images:
        if rule["name"] != name:
            continue
        name = str(rule.get("newName") or name)
        if rule.get("digest"):
            return f"{name}@{rule['digest']}"
        if rule.get("newTag") is not None:
            return f"{name}:{rule['newTag']}"
        break
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
