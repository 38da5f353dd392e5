"""Loading input files into a FHIR server (the `sandbox` command and the tests): a file as a
transaction of `PUT Type/id` entries, split into dependency-ordered chunks."""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from ..decision import NAMESPACE
from ..fhir.client import FhirClient
from ..fhir.values import reference_holders


def as_transaction(raw: bytes, *, id_prefix: str = "", name: str = "input") -> dict[str, Any]:
    """An input file (a Bundle of any type, a resource, NDJSON) as a transaction Bundle of
    `PUT {Type}/{id}` entries, so loading it twice changes nothing. References between its
    resources (relative, absolute, urn:uuid) become relative `Type/id`; with `id_prefix` every id
    is prefixed, so several files (or test runs) that reuse ids do not overwrite each other."""
    from ..fhir.ingest import parse_bytes

    index = parse_bytes(raw, name=name)
    top = [res for res in index.resources if res.type != "Bundle" and res.container is None]
    new_ids: dict[int, str] = {}
    for res in top:
        original = res.id or str(uuid.uuid5(NAMESPACE, res.full_url or res.path))
        new_ids[id(res)] = prefixed_id(id_prefix, original)
    entries: dict[str, dict[str, Any]] = {}
    for res in top:
        data = copy.deepcopy(res.data)
        data["id"] = new_ids[id(res)]
        meta = data.get("meta")
        if isinstance(meta, dict):
            for server_owned in ("versionId", "lastUpdated", "source"):
                meta.pop(server_owned, None)
            if not meta:
                data.pop("meta")
        for holder in reference_holders(data, into_contained=True):
            reference = holder["reference"]
            if reference.startswith("#"):
                continue
            target = index.resolve(reference, res)
            if target is not None and target.container is None and id(target) in new_ids:
                holder["reference"] = f"{target.type}/{new_ids[id(target)]}"
        key = f"{res.type}/{data['id']}"
        entries[key] = {"resource": data, "request": {"method": "PUT", "url": key}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries.values())}


MAX_TRANSACTION_ENTRIES = 50  # Medplum's limit on updates per transaction; HAPI takes more


def transaction_chunks(bundle: Mapping[str, Any], size: int = MAX_TRANSACTION_ENTRIES) -> list[dict[str, Any]]:
    """Split a transaction of `PUT Type/id` entries into transactions of at most `size` entries,
    resources before what references them, so a server that checks references (HAPI) accepts
    every chunk. Reference cycles stay in file order."""
    entries = list(bundle.get("entry") or [])
    keys = [str(e["request"]["url"]) for e in entries]
    position = {key: i for i, key in enumerate(keys)}
    depends = [
        {position[r["reference"]] for r in reference_holders(e["resource"]) if r["reference"] in position} - {i}
        for i, e in enumerate(entries)
    ]
    order: list[int] = []
    state: dict[int, int] = {}  # 1: on the walk's path, 2: placed
    for start_node in range(len(entries)):
        if state.get(start_node):
            continue
        state[start_node] = 1
        stack = [(start_node, iter(sorted(depends[start_node])))]
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif not state.get(target):
                state[target] = 1
                stack.append((target, iter(sorted(depends[target]))))
    chunks = [[entries[i] for i in order[at : at + size]] for at in range(0, len(order), size)]
    return [{"resourceType": "Bundle", "type": "transaction", "entry": chunk} for chunk in chunks]


def load_file(client: FhirClient, raw: bytes, *, id_prefix: str = "", name: str = "input") -> list[dict[str, Any]]:
    """Load an input file into the server (see `as_transaction`), in dependency-ordered chunks."""
    return [
        client.transaction(chunk) for chunk in transaction_chunks(as_transaction(raw, id_prefix=id_prefix, name=name))
    ]


def prefixed_id(prefix: str, original: str) -> str:
    new = f"{prefix}{original}"
    if len(new) <= 64:
        return new
    digest = hashlib.sha256(new.encode()).hexdigest()[:10]
    return f"{new[:53]}-{digest}"
