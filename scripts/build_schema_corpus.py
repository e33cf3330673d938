"""(Re)build tests/data/schemas/: real-world JSON Schemas for the mock provider's tests and bench.

Every schema comes from a package on PyPI, fetched with `pip download --no-deps` at a pinned
version, so the corpus can be rebuilt and checked:

- check-jsonschema: the SchemaStore schemas it vendors (GitHub workflows, GitLab CI, ...);
- jsonschema-specifications: the draft 4 to 2020-12 metaschemas (2019-09/2020-12 bundled
  with their vocabularies under $defs, each keeping its $id);
- openapi-spec-validator / openapi-schema-validator: the OpenAPI 2.0-3.2 document schemas;
- aws-sam-translator and cfn-lint: the SAM schema and a sample of CloudFormation resources;
- kubernetes-validate: a sample of Kubernetes kinds, bundled with the definitions they use;
- jsonschema (sdist): the JSON Schema Test Suite, every group that has a valid case.

Each entry is self-contained (no reference leaves the document; files it referenced are
bundled into it), has "description" texts removed (they are most of the bytes and change no
validation) and is checked: the python `jsonschema` package must accept it as a schema, and
for test-suite entries a valid case must pass. Output: one JSON file per source (a list of
{"id", "source", "schema"}) and index.json (id -> file, source, and known facts).

Run: python scripts/build_schema_corpus.py [--dest tests/data/schemas]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

PINS = {
    "check-jsonschema": "0.39.0",
    "jsonschema-specifications": "2025.9.1",
    "openapi-spec-validator": "0.9.0",
    "openapi-schema-validator": "0.9.0",
    "aws-sam-translator": "1.115.0",
    "cfn-lint": "1.58.0",
    "kubernetes-validate": "1.37.0",
    "jsonschema": "4.26.0",
}
MAX_BYTES = 400_000  # one entry, minified: keeps the corpus a few MB
CFN_SAMPLE = 160
K8S_KINDS = (
    "deployment-apps-v1 statefulset-apps-v1 daemonset-apps-v1 replicaset-apps-v1 pod-v1 "
    "service-v1 configmap-v1 secret-v1 namespace-v1 serviceaccount-v1 persistentvolumeclaim-v1 "
    "persistentvolume-v1 job-batch-v1 cronjob-batch-v1 ingress-networking-v1 "
    "networkpolicy-networking-v1 role-rbac-v1 rolebinding-rbac-v1 clusterrole-rbac-v1 "
    "horizontalpodautoscaler-autoscaling-v2 poddisruptionbudget-policy-v1 limitrange-v1 "
    "resourcequota-v1 storageclass-storage-v1 endpoints-v1 event-v1 lease-coordination-v1 "
    "priorityclass-scheduling-v1 ingressclass-networking-v1 csidriver-storage-v1 "
    "validatingwebhookconfiguration-admissionregistration-v1 "
    "customresourcedefinition-apiextensions-v1 node-v1 container-v1 probe-v1"
).split()
DRAFTS = {
    "draft4": "http://json-schema.org/draft-04/schema#",
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}
_NOT_SCHEMA = frozenset({"enum", "const", "default", "examples", "example"})


def fetch(package: str, work: Path) -> Path:
    """The package's unpacked distribution (wheel, or sdist for jsonschema)."""
    dest = work / package
    if dest.exists():
        return dest
    spec = f"{package}=={PINS[package]}"
    extra = ["--no-binary", package] if package == "jsonschema" else []
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, "-d", str(work), spec],
        check=True,
    )
    name = package.replace("-", "_")
    for archive in work.iterdir():
        if archive.name.lower().startswith(name + "-") and archive.is_file():
            if archive.suffix == ".whl":
                zipfile.ZipFile(archive).extractall(dest)
            else:
                dest.mkdir()
                subprocess.run(["tar", "xzf", str(archive), "-C", str(dest)], check=True)
            return dest
    raise SystemExit(f"no archive for {spec} in {work}")


def strip(node: Any) -> Any:
    """`node` without description/$comment texts, leaving enum/const/default values alone."""
    if isinstance(node, dict):
        return {
            k: (v if k in _NOT_SCHEMA else strip(v))
            for k, v in node.items()
            if not (k in ("description", "$comment", "markdownDescription") and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            elif k not in _NOT_SCHEMA:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def bundle_k8s(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the definitions it reaches copied under its own $defs, refs made local.

    A kind's file refers to `/api/_definitions.json#/$defs/NAME`; those definitions refer to
    each other as `#/$defs/NAME`, so keeping the names makes both resolve in one document.
    """
    prefix = "/api/_definitions.json#/$defs/"
    text = json.dumps(schema).replace(f'"{prefix}', '"#/$defs/')
    out: dict[str, Any] = json.loads(text)
    reached: dict[str, Any] = {}
    pending = [r.rsplit("/", 1)[-1] for r in refs(out)]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached[name] = definitions[name]
            pending.extend(r.rsplit("/", 1)[-1] for r in refs(definitions[name]))
    out["$defs"] = reached
    return out


def _no_remote(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)


def usable(schema: Any, valid: list[Any] | None = None) -> bool:
    """The schema is a schema, resolves without the network, and accepts its valid cases."""
    registry: referencing.Registry[Any] = referencing.Registry(retrieve=_no_remote)  # type: ignore[call-arg]
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)
        for case in valid if valid is not None else []:
            if not validator.is_valid(case):
                return False
        validator.is_valid({})  # touches the root's refs at least
        return True
    except Exception:
        return False


def schemastore(work: Path) -> Iterator[tuple[str, Any]]:
    root = fetch("check-jsonschema", work) / "check_jsonschema" / "builtin_schemas"
    for path in sorted(root.glob("*/*.json")):
        yield f"schemastore/{path.stem}", json.loads(path.read_text())


def metaschemas(work: Path) -> Iterator[tuple[str, Any]]:
    root = fetch("jsonschema-specifications", work) / "jsonschema_specifications" / "schemas"
    for draft in sorted(root.iterdir()):
        if draft.name == "draft3":
            continue
        schema = json.loads((draft / "metaschema.json").read_text())
        vocabularies = draft / "vocabularies"
        if vocabularies.is_dir():  # a compound document: each vocabulary keeps its $id
            schema["$defs"] = {
                p.stem: json.loads(p.read_text()) for p in sorted(vocabularies.glob("*"))
            }
        yield f"metaschema/{draft.name}", schema


def openapi(work: Path) -> Iterator[tuple[str, Any]]:
    spec = fetch("openapi-spec-validator", work) / "openapi_spec_validator" / "resources"
    for path in sorted(spec.glob("schemas/*/schema.json")):
        yield f"openapi/{path.parent.name}", json.loads(path.read_text())
    dialects = fetch("openapi-schema-validator", work) / "openapi_schema_validator" / "schemas"
    for path in sorted(dialects.rglob("*")):
        if path.is_file():
            yield f"openapi-dialect/{path.parent.name}-{path.stem}", json.loads(path.read_text())


def aws(work: Path) -> Iterator[tuple[str, Any]]:
    sam = fetch("aws-sam-translator", work) / "samtranslator"
    yield (
        "aws-sam/policy-templates",
        json.loads((sam / "policy_templates_data" / "schema.json").read_text()),
    )
    cfn = fetch("cfn-lint", work) / "cfnlint" / "data" / "schemas"
    names = json.loads((cfn / "providers" / "us-east-1.json").read_text())
    types = sorted(names)
    step = max(1, len(types) // CFN_SAMPLE)
    for name in types[::step][:CFN_SAMPLE]:
        path = cfn / "resources" / f"{names[name]}.json"
        if path.exists():
            yield f"cloudformation/{name.replace('::', '-')}", json.loads(path.read_text())


def kubernetes(work: Path) -> Iterator[tuple[str, Any]]:
    base = fetch("kubernetes-validate", work) / "kubernetes_validate" / "kubernetes-json-schema"
    folder = base / "v1.37.0-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())["$defs"]
    for kind in K8S_KINDS:
        path = folder / f"{kind}.json"
        if path.exists():
            schema = json.loads(path.read_text())
            yield f"kubernetes/{kind}", bundle_k8s(schema, definitions)


def test_suite(work: Path) -> Iterator[tuple[str, Any, list[Any]]]:
    root = fetch("jsonschema", work) / f"jsonschema-{PINS['jsonschema']}" / "json" / "tests"
    seen: set[str] = set()
    for draft, uri in DRAFTS.items():
        for path in sorted((root / draft).rglob("*.json")):
            rel = path.relative_to(root / draft).with_suffix("").as_posix()
            for n, group in enumerate(json.loads(path.read_text())):
                schema = group["schema"]
                valid = [t["data"] for t in group["tests"] if t["valid"]]
                if not isinstance(schema, dict) or not valid:
                    continue
                if "$schema" not in schema:
                    schema = {"$schema": uri, **schema}
                key = json.dumps(schema, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                yield f"test-suite/{draft}/{rel}/{n}", schema, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dest", type=Path, default=Path("tests/data/schemas"))
    parser.add_argument("--work", type=Path, default=None, help="download folder (kept)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="schema-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    args.dest.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    dropped: list[str] = []

    def add(file: str, source: str, entry_id: str, schema: Any, valid: list[Any] | None) -> None:
        schema = strip(schema)
        size = len(json.dumps(schema, separators=(",", ":")))
        if any("json-schema.org" in r for r in refs(schema)):
            dropped.append(f"{entry_id} (refers to a metaschema by URL)")
            return
        if size > MAX_BYTES or not usable(schema, valid):
            dropped.append(f"{entry_id} ({'too large' if size > MAX_BYTES else 'not usable'})")
            return
        groups.setdefault(file, []).append({"id": entry_id, "schema": schema})
        index[entry_id] = {"file": f"{file}.json", "source": source, "bytes": size}
        if valid is not None:
            index[entry_id]["satisfiable"] = True  # the test suite has a valid case

    real = {
        "schemastore": (schemastore, f"check-jsonschema {PINS['check-jsonschema']}"),
        "metaschemas": (
            metaschemas,
            f"jsonschema-specifications {PINS['jsonschema-specifications']}",
        ),
        "openapi": (openapi, "openapi-spec-validator / openapi-schema-validator 0.9.0"),
        "aws": (
            aws,
            f"aws-sam-translator {PINS['aws-sam-translator']}, cfn-lint {PINS['cfn-lint']}",
        ),
        "kubernetes": (kubernetes, f"kubernetes-validate {PINS['kubernetes-validate']}"),
    }
    for file, (source_fn, source) in real.items():
        for entry_id, schema in source_fn(work):
            add(file, source, entry_id, schema, None)
    for entry_id, schema, valid in test_suite(work):
        add("test-suite", f"JSON Schema Test Suite in jsonschema {PINS['jsonschema']}", entry_id,
            schema, valid)  # fmt: skip

    for file, entries in groups.items():
        text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
        (args.dest / f"{file}.json").write_text(text + "\n", encoding="utf-8")
    (args.dest / "index.json").write_text(
        json.dumps({"entries": index, "dropped": sorted(dropped)}, indent=1, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    print(f"{len(index)} schemas in {len(groups)} files, {len(dropped)} dropped", file=sys.stderr)


if __name__ == "__main__":
    main()
