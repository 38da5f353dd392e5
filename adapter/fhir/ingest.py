"""Bytes in, indexed FHIR resources out.

Accepts every input form (docs/input.md, input forms): a Bundle of any type (nested Bundles
included), a single resource, or NDJSON. Resources stay plain dicts (no model construction on the
hot path); each one remembers the FHIRPath it came from so findings can point back into the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from ..errors import ErrorDetail, InputTooLargeError, InvalidR4Error, NotFhirError, NotJsonError
from . import r4codes, r4fast, r4schema
from .values import parse_instant

DEFAULT_MAX_INPUT_BYTES = 64 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_MAX_SCHEMA_DETAILS = 20
# orjson writes at most 255 levels and a Bundle wraps each resource in three more: a resource the
# adapter uses and may write must stay below that (checked with the R4 structure, so `check` and
# `claim` answer alike).
MAX_USED_DEPTH = 250
# Only for the message of an input that is not R4: compiled on first use (re keeps it).
_TYPE_NAME = r"^[A-Z][A-Za-z]{1,63}$"


@dataclass(eq=False, slots=True)
class Res:
    """One resource of the input, with where it came from."""

    data: dict[str, Any]
    type: str
    id: str | None
    path: str  # FHIRPath of the resource in the input: "Bundle.entry[3].resource", "Procedure", ...
    full_url: str | None = None
    container: Res | None = None  # the resource holding this one in `contained`
    contained: dict[str, Res] = field(default_factory=dict)
    line: int | None = None  # NDJSON line number
    # The key, once asked for: readers and writers ask for it again and again, and nothing above
    # changes after a resource is read.
    _key: str | None = field(default=None, init=False, repr=False)

    @property
    def key(self) -> str:
        """`Type/id` for resources with an id, else the fullUrl, else where it stands (unique)."""
        key = self._key
        if key is None:
            key = self._key = self._find_key()
        return key

    def _find_key(self) -> str:
        if self.id and self.container is None:
            return f"{self.type}/{self.id}"
        if self.container is not None:
            return f"{self.container.key}#{self.id}"
        if self.full_url:
            return self.full_url
        return f"{self.path}@line{self.line}" if self.line is not None else self.path

    def label(self) -> str:
        """How messages name a resource: its type and id, never its content."""
        if self.id:
            return f"{self.type}/{self.id}"
        return f"{self.type} on line {self.line}" if self.line is not None else f"{self.type} at {self.path}"


class ResourceIndex:
    """All resources of one input, found by type, by `Type/id`, by fullUrl, and by reference."""

    def __init__(self, resources: list[Res]) -> None:
        self.resources = resources
        self.by_type: dict[str, list[Res]] = {}
        self._contained_by_type: dict[str, list[Res]] = {}
        self._by_key: dict[str, Res] = {}
        self._by_url: dict[str, Res] = {}
        self._validated: dict[int, InvalidR4Error | None] = {}
        # Derived lists a reader computes once per input (e.g. the guidance procedures).
        self.memo: dict[str, object] = {}
        for res in resources:
            self.by_type.setdefault(res.type, []).append(res)
            if res.id:
                self._by_key[f"{res.type}/{res.id}"] = res
            else:
                self._by_key.setdefault(res.key, res)
            if res.full_url:
                self._by_url[res.full_url] = res
            for inner in res.contained.values():
                self._contained_by_type.setdefault(inner.type, []).append(inner)

    def of_type(self, *types: str, contained: bool = False) -> list[Res]:
        """Resources of these types; with `contained`, also those contained in other resources."""
        found: list[Res] = []
        for name in types:
            found.extend(self.by_type.get(name, ()))
            if contained:
                found.extend(self._contained_by_type.get(name, ()))
        return found

    def get(self, key: str) -> Res | None:
        """A resource by `Type/id`, or a contained one by `Type/id#inner` (its Res.key)."""
        if "#" in key:
            container_key, _, inner = key.rpartition("#")
            container = self._by_key.get(container_key) or self._by_url.get(container_key)
            return container.contained.get(inner) if container is not None else None
        # Resources without an id (transaction POST entries) are keyed by their fullUrl.
        return self._by_key.get(key) or self._by_url.get(key)

    def resolve(self, reference: object, context: Res | None = None) -> Res | None:
        """Resolve a Reference (dict) or reference string the way a Bundle reader must."""
        # `type(...) is dict` first: the Mapping ABC check costs several times more.
        if type(reference) is dict or isinstance(reference, Mapping):
            reference = reference.get("reference")
        if not isinstance(reference, str) or not reference:
            return None
        if reference.startswith("#"):
            holder = context.container or context if context is not None else None
            if holder is None:
                return None
            if reference == "#":
                return holder
            return holder.contained.get(reference[1:])
        if reference in self._by_url:
            return self._by_url[reference]
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            return None
        relative = relative_part(reference)
        if relative is None:
            return None
        if context is not None and context.full_url and "://" not in reference:
            base = _service_base(context.full_url)
            if base and f"{base}/{relative}" in self._by_url:
                return self._by_url[f"{base}/{relative}"]
        return self._by_key.get(relative)

    def is_valid(self, res: Res) -> bool:
        """Whether a resource (its container, for a contained one) is valid R4 the adapter can
        write back; never raises."""
        try:
            self.validate_used(res)
        except InvalidR4Error:
            return False
        return True

    def validate_used(self, res: Res) -> None:
        """Check a resource the adapter uses against the R4 structure rules; raises InvalidR4Error.
        The answer is kept per resource (a contained resource is checked with its container)."""
        top = res
        while top.container is not None:
            top = top.container
        if id(top) not in self._validated:
            self._validated[id(top)] = self._problems(top)
        error = self._validated[id(top)]
        if error is not None:
            raise error

    def known_valid(self, res: Res) -> bool:
        """Whether a top-level resource has been checked and found valid R4 (nothing is checked now)."""
        return id(res) in self._validated and self._validated[id(res)] is None

    def mark_valid(self, res: Res) -> None:
        """Take the verdict "valid R4" for a top-level resource from an earlier check of the same
        bytes (a bulk worker meets the same shared records patient after patient)."""
        self._validated[id(res)] = None

    @staticmethod
    def _problems(top: Res) -> InvalidR4Error | None:
        # Most resources are valid: the walk that builds no issue paths says so, else the full check words the issues.
        fast_depth = r4fast.valid_depth(top.data)
        issues: list[r4schema.SchemaIssue] = []
        if fast_depth is not None:
            depth = fast_depth
        else:
            issues, depth = r4schema.validate_with_depth(top.data, max_issues=_MAX_SCHEMA_DETAILS)
        if not issues:
            # The codes the adapter reads must be R4's (structure first: codes of a malformed
            # resource are not worth reading).
            issues = r4codes.check(top.data, top.type)[:_MAX_SCHEMA_DETAILS]
        if not issues and depth > MAX_USED_DEPTH:
            return InvalidR4Error(
                f"{top.label()} is nested more than {MAX_USED_DEPTH} levels deep; the adapter cannot write it back "
                "(FHIR resources are not nested that deep)."
            )
        if not issues:
            return None
        details = [
            ErrorDetail(
                message=f"{issue.message} ({top.label()})",
                expression=_rebase(issue.path, top),
                code=issue.code,
            )
            for issue in issues
        ]
        return InvalidR4Error(
            f"{top.label()} is not valid FHIR R4 ({len(details)} problem(s)).",
            details=details,
        )


def _rebase(schema_path: str, res: Res) -> str:
    _, _, rest = schema_path.partition(".")
    return res.path if not rest else f"{res.path}.{rest}"


@lru_cache(maxsize=16384)  # the same references recur in every resource of a bulk export
def relative_part(reference: str) -> str | None:
    """`Type/id` from a relative, versioned or absolute RESTful reference."""
    parts = reference.split("?")[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    type_, id_ = parts[-2], parts[-1]
    if not type_ or not id_ or not type_[0].isupper():
        return None
    return f"{type_}/{id_}"


def _service_base(full_url: str) -> str | None:
    parts = full_url.rstrip("/").split("/")
    if "://" not in full_url or len(parts) < 3:
        return None
    return "/".join(parts[:-2])


# --------------------------------------------------------------------------- parsing


def parse_bytes(raw: bytes, *, name: str = "input", max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> ResourceIndex:
    """Parse JSON or NDJSON bytes into a resource index. Raises InputError subclasses only."""
    if len(raw) > max_bytes:
        raise InputTooLargeError(
            f"The {name} is {len(raw):,} bytes, over the limit of {max_bytes:,} bytes (raise it with --max-input-mb)."
        )
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw.strip():
        raise NotJsonError(f"The {name} is empty.")
    force_ndjson = name.endswith(".ndjson")
    values: list[tuple[Any, int | None]]
    if not force_ndjson:
        try:
            values = [(orjson.loads(raw), None)]
        except orjson.JSONDecodeError as whole_error:
            values = _parse_ndjson(raw, name, whole_error)
    else:
        values = _parse_ndjson(raw, name, None)
    resources: list[Res] = []
    for value, line in values:
        _collect(value, resources, line=line)
    _check_types(resources)
    return ResourceIndex(resources)


def index_resources(resources: Iterable[Mapping[str, Any]], *, base_url: str | None = None) -> ResourceIndex:
    """An index of resources already in memory (a FHIR server's search results), read as one
    collection Bundle whose fullUrls are their server addresses (`{base_url}/Type/id`), so that
    relative and absolute references between them resolve. Resources without an id have no
    server address and are passed over. Nothing is serialised."""
    base = base_url.rstrip("/") if base_url else None
    entries: list[dict[str, Any]] = []
    for resource in resources:
        type_, id_ = resource.get("resourceType"), resource.get("id")
        if not isinstance(id_, str):
            continue
        entry: dict[str, Any] = {"resource": resource}
        if base is not None and isinstance(type_, str):
            entry = {"fullUrl": f"{base}/{type_}/{id_}", **entry}
        entries.append(entry)
    collected: list[Res] = []
    _collect({"resourceType": "Bundle", "type": "collection", "entry": entries}, collected, line=None)
    _check_types(collected)
    return ResourceIndex(collected)


def _parse_ndjson(raw: bytes, name: str, whole_error: orjson.JSONDecodeError | None) -> list[tuple[Any, int | None]]:
    values: list[tuple[Any, int | None]] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            values.append((orjson.loads(line), number))
        except orjson.JSONDecodeError as line_error:
            if whole_error is not None and not values:
                raise NotJsonError(f"The {name} is neither JSON nor NDJSON: {_json_error_text(whole_error)}.") from None
            raise NotJsonError(f"Line {number} of the {name} is not JSON: {_json_error_text(line_error)}.") from None
    if not values:
        raise NotJsonError(f"The {name} is empty.")
    return values


def _json_error_text(error: orjson.JSONDecodeError) -> str:
    # orjson's message names the problem and position; it may quote a fragment of the input,
    # which can be patient data, so only the reason and position are kept.
    reason = str(error.msg).split(":")[0] if error.msg else "invalid JSON"
    return f"{reason} at line {error.lineno}, column {error.colno}"


def _collect(value: Any, out: list[Res], *, line: int | None) -> None:
    """Flatten one top-level JSON value (resource or Bundle) into `out`, iteratively."""
    if not isinstance(value, dict):
        where = f"line {line}" if line is not None else "the input"
        raise NotFhirError(f"JSON value at {where} is not a FHIR resource (expected an object with resourceType).")
    base_path = _type_name(value)
    stack: list[tuple[dict[str, Any], str, str | None, int | None]] = [(value, base_path, None, line)]
    while stack:
        resource, path, full_url, src_line = stack.pop()
        type_ = _type_name(resource)
        if type_ == "Bundle":
            out.append(_make_res(resource, type_, path, full_url, src_line))
            entries = _bundle_entries(resource)
            for index, entry, entry_resource in reversed(entries):
                entry_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
                stack.append((entry_resource, f"{path}.entry[{index}].resource", entry_url, src_line))
            continue
        out.append(_make_res(resource, type_, path, full_url, src_line))


def line_resource(value: dict[str, Any], line: int | None) -> Res:
    """One resource read from an NDJSON line (not a Bundle): what `parse_bytes` makes of it."""
    type_ = _type_name(value)
    return _make_res(value, type_, type_, None, line)


def _type_name(resource: Mapping[str, Any]) -> str:
    type_ = resource.get("resourceType")
    return type_ if isinstance(type_, str) and type_ else "Resource"


def _make_res(resource: dict[str, Any], type_: str, path: str, full_url: str | None, line: int | None) -> Res:
    id_ = resource.get("id")
    res = Res(
        data=resource,
        type=type_,
        id=id_ if isinstance(id_, str) and id_ else None,
        path=path,
        full_url=full_url,
        line=line,
    )
    contained = resource.get("contained")
    if isinstance(contained, list):
        for index, inner in enumerate(contained):
            if not isinstance(inner, dict):
                continue
            inner_id = inner.get("id")
            child = Res(
                data=inner,
                type=_type_name(inner),
                id=inner_id if isinstance(inner_id, str) and inner_id else None,
                path=f"{path}.contained[{index}]",
                container=res,
            )
            if child.id:
                res.contained[child.id] = child
    return res


def _bundle_entries(bundle: Mapping[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Entries that carry a resource; for a history Bundle only the newest live version of each."""
    raw_entries = bundle.get("entry")
    if not isinstance(raw_entries, list):
        return []
    entries = [
        (index, entry, entry.get("resource")) for index, entry in enumerate(raw_entries) if isinstance(entry, dict)
    ]
    if bundle.get("type") != "history":
        return [(i, e, r) for i, e, r in entries if isinstance(r, dict)]
    return _newest_versions(entries)


def _newest_versions(
    entries: list[tuple[int, dict[str, Any], Any]],
) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    # A history Bundle lists the newest version first (R4 http.html#history); lastUpdated, when
    # every version of a resource has one, is the stronger signal.
    versions: dict[str, list[tuple[int, dict[str, Any], Any]]] = {}
    order: list[str] = []
    for index, entry, resource in entries:
        key = _history_key(entry, resource) or f"#entry{index}"
        if key not in versions:
            versions[key] = []
            order.append(key)
        versions[key].append((index, entry, resource))
    kept: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for key in order:
        candidates = versions[key]
        stamps = [parse_instant(_history_stamp(entry, resource)) for _, entry, resource in candidates]
        if all(stamp is not None for stamp in stamps):
            newest = max(zip(stamps, candidates, strict=True), key=lambda pair: pair[0])[1]  # type: ignore[arg-type,return-value]
        else:
            newest = candidates[0]
        index, entry, resource = newest
        method = entry.get("request", {}).get("method") if isinstance(entry.get("request"), dict) else None
        if method == "DELETE" or not isinstance(resource, dict):
            continue
        kept.append((index, entry, resource))
    return sorted(kept, key=lambda item: item[0])


def _history_key(entry: Mapping[str, Any], resource: Any) -> str | None:
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        return f"{_type_name(resource)}/{resource['id']}"
    request = entry.get("request")
    if isinstance(request, dict) and isinstance(request.get("url"), str):
        return relative_part(request["url"])
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str):
        return relative_part(full_url)
    return None


def _history_stamp(entry: Mapping[str, Any], resource: Any) -> str | None:
    if isinstance(resource, dict):
        meta = resource.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("lastUpdated"), str):
            return str(meta["lastUpdated"])
    response = entry.get("response")
    if isinstance(response, dict) and isinstance(response.get("lastModified"), str):
        return str(response["lastModified"])
    return None


def _check_types(resources: list[Res]) -> None:
    """Every resource, contained ones included, must name an R4 resource type."""
    for res in _with_contained(resources):
        declared = res.data.get("resourceType")
        if not isinstance(declared, str) or not declared:
            raise NotFhirError(
                f"The JSON object at {res.path} has no resourceType: it is not a FHIR resource.",
                details=[ErrorDetail("resourceType is missing.", res.path, "required")],
            )
        if not r4schema.is_r4_resource_type(declared):
            # The value comes from the input: name it only when it looks like a type name.
            named = declared if re.match(_TYPE_NAME, declared) else "The resourceType"
            raise NotFhirError(
                f"{named} at {res.path} is not a FHIR R4 resource type "
                "(R5/R4B-only types and unknown names are rejected).",
                details=[
                    ErrorDetail("Unknown resource type for FHIR R4.", f"{res.path}.resourceType", "not-supported")
                ],
            )


def _with_contained(resources: list[Res]) -> Iterator[Res]:
    for res in resources:
        yield res
        yield from res.contained.values()
        raw = res.data.get("contained")
        if isinstance(raw, list):
            for index, inner in enumerate(raw):
                if not isinstance(inner, dict) or not isinstance(inner.get("id"), str):
                    yield Res(
                        data=inner if isinstance(inner, dict) else {},
                        type="Resource",
                        id=None,
                        path=f"{res.path}.contained[{index}]",
                        container=res,
                    )
