"""How a written Claim points at the resources it names: Bundle entries (each resource once, with a
stable fullUrl, references rewritten to them) or references as a FHIR server holds them.

Shared by the Claim writer (`fhir_claim`) and the PAS request writer (`pas`). A writer that writes
a resource itself instead of copying the input's (the PAS request writes its parties to the PAS
profiles) reserves it first, so every reference to it points at the entry it supplies.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, NamedTuple, Protocol, cast

import orjson

from ..decision import name_uuid
from ..fhir.ingest import Res, ResourceIndex
from ..fhir.values import copy_with_references

log = logging.getLogger(__name__)

NOT_ON_SERVER = "not on the FHIR server"
# What `close_json` keeps in the index: per resource, its plan; per resource and references, its entry.
_PLANS = "bundle-entry-plans"
_WRITTEN = "bundle-entries-written"
_URLS = "bundle-entry-urls"


class References(Protocol):
    """How the Claim points at the resources it names: Bundle fullUrls, or server references."""

    def to(self, key: str | None, display: str) -> dict[str, Any]: ...


def entry_url(res: Res) -> str:
    """A resource's fullUrl in the Bundle: its own http(s) fullUrl, else a urn:uuid derived from its
    key (stable: the same input always gives the same Bundle)."""
    if res.container is None and res.full_url and res.full_url.startswith(("http://", "https://")):
        return res.full_url
    return key_url(res.key)


@lru_cache(maxsize=4096)  # a bulk run names the same shared resources in many Bundles
def key_url(key: str) -> str:
    return f"urn:uuid:{name_uuid(key)}"


class _Plan(NamedTuple):
    """A copy of a resource, the references in the copy, and what each one resolves to."""

    copy: dict[str, Any]
    holders: list[dict[str, Any]]
    originals: tuple[str, ...]
    targets: tuple[Res | None, ...]


def _plan(res: Res, index: ResourceIndex) -> _Plan:
    copy, holders = copy_with_references(res.data)
    originals = tuple(holder["reference"] for holder in holders)
    return _Plan(copy, holders, originals, tuple(index.resolve(reference, res) for reference in originals))


class BundleEntries:
    """The Bundle's resources: each once, with a stable fullUrl, references rewritten to them.

    The resources the Claim names were read (and checked as R4) by the reader. What they reference
    in turn is added as far as the input has it, except what cannot be written as valid R4 (left
    out, its reference kept as written) and other patients' data (never copied into a claim).

    A resource the writer `reserve`s is written as it `supply`s it instead of copied (also when the
    input only references it); its entry keeps the fullUrl a copy would have had.

    `close` gives the entries as dicts of their own. With `kept`, `close_json` gives them
    serialised, and what is worked out per resource (its copy and references, its fullUrl, its
    serialised entry) is kept in the index: the Bundles of one patient's sessions name mostly the
    same resources.
    """

    def __init__(self, index: ResourceIndex, patient: str, *, kept: bool = False) -> None:
        self.index = index
        self.patient = patient
        self.order: list[Res | str] = []  # a resource of the input, or the key of a reserved one it lacks
        self.urls: dict[int, str] = {}
        self.reserved: dict[str, str] = {}  # key -> fullUrl
        self.supplied: dict[str, dict[str, Any]] = {}
        # Kept in the index when the entries are serialised (`kept`): each resource's plan and fullUrl.
        self._plans: dict[int, _Plan] | None = None
        self._known_urls: dict[int, str] | None = None
        if kept:
            memo = cast("dict[str, Any]", index.memo)
            self._plans = memo.setdefault(_PLANS, {})
            self._known_urls = memo.setdefault(_URLS, {})

    def url_of(self, res: Res) -> str:
        key = id(res)
        url = self.urls.get(key)
        if url is None:
            url = self._known_urls.get(key) if self._known_urls is not None else None
            if url is None:
                url = entry_url(res)
                if self._known_urls is not None:
                    self._known_urls[key] = url
            self.urls[key] = url
            self.order.append(res)
        return url

    def reserve(self, key: str) -> None:
        res = self.index.get(key)
        self.reserved[key] = entry_url(res) if res is not None else key_url(key)

    def supply(self, key: str, resource: dict[str, Any]) -> None:
        self.supplied[key] = resource

    def to(self, key: str | None, display: str) -> dict[str, Any]:
        res = self.index.get(key) if key else None
        if res is not None:
            return {"reference": self.url_of(res)}
        if key and key in self.reserved:
            if key not in self.order:
                self.order.append(key)
            return {"reference": self.reserved[key]}
        if key and "/" in key:
            return {"reference": key}
        return {"display": display}

    def _includable(self, res: Res) -> bool:
        if res.type == "Patient" and res.key != self.patient:
            return False
        for element in ("subject", "patient", "beneficiary"):
            value = res.data.get(element)
            if isinstance(value, dict) and "reference" in value:
                owner = self.index.resolve(value, res)
                if owner is not None and owner.type == "Patient" and owner.key != self.patient:
                    return False
        if not self.index.is_valid(res):
            log.info("%s left out of the Bundle: not writable as valid R4", res.label())
            return False
        return True

    def close(self) -> list[dict[str, Any]]:
        """Copies of the resources, with what they reference added transitively. One walk of each
        resource copies it and finds its references (in the copy); they are then rewritten to the
        Bundle's fullUrls."""
        entries = []
        for url, res, plan in self._closed():
            if plan is None:
                entries.append({"fullUrl": url, "resource": self.supplied[res if isinstance(res, str) else res.key]})
            else:
                assert not isinstance(res, str)  # noqa: S101 - a plan is made for resources of the input only
                entries.append({"fullUrl": url, "resource": self._written(res, plan, self._finals(res, plan))})
        return entries

    def close_json(self) -> list[orjson.Fragment]:
        """The entries `close` gives, each serialised; the same resource with the same references
        is serialised once per index."""
        memo = cast("dict[str, Any]", self.index.memo)
        written: dict[tuple[int, tuple[str, ...]], orjson.Fragment] = memo.setdefault(_WRITTEN, {})
        entries = []
        for url, res, plan in self._closed():
            if plan is None:
                resource = self.supplied[res if isinstance(res, str) else res.key]
                entries.append(orjson.Fragment(orjson.dumps({"fullUrl": url, "resource": resource})))
                continue
            assert not isinstance(res, str)  # noqa: S101 - a plan is made for resources of the input only
            finals = self._finals(res, plan)
            key = (id(res), finals)
            fragment = written.get(key)
            if fragment is None:
                entry = {"fullUrl": url, "resource": self._written(res, plan, finals)}
                fragment = written[key] = orjson.Fragment(orjson.dumps(entry))
            entries.append(fragment)
        return entries

    def _plan_of(self, res: Res) -> _Plan:
        if self._plans is None:
            return _plan(res, self.index)
        plan = self._plans.get(id(res))
        if plan is None:
            plan = self._plans[id(res)] = _plan(res, self.index)
        return plan

    def _closed(self) -> list[tuple[str, Res | str, _Plan | None]]:
        """Add what the resources reference, transitively; then (fullUrl, resource, its plan, None
        for a resource the writer supplies) in Bundle order."""
        plans: dict[int, _Plan] = {}
        done = 0
        while done < len(self.order):
            res = self.order[done]
            done += 1
            if isinstance(res, str) or res.key in self.supplied:
                continue  # written by the writer: it references what it names itself
            plan = plans[id(res)] = self._plan_of(res)
            for reference, target in zip(plan.originals, plan.targets, strict=True):
                if reference.startswith("#"):
                    continue
                if target is not None and id(target) not in self.urls and self._includable(target):
                    self.url_of(target)
        closed: list[tuple[str, Res | str, _Plan | None]] = []
        for res in self.order:
            key = res if isinstance(res, str) else res.key
            if key in self.supplied:
                closed.append((self.reserved.get(key) or self.urls[id(res)], res, None))
            elif not isinstance(res, str):  # a reserved key never supplied, not in the input: nothing to write
                closed.append((self.urls[id(res)], res, plans[id(res)]))
        return closed

    def _finals(self, res: Res, plan: _Plan) -> tuple[str, ...]:
        """The copy's references as written: to the entry of what they resolve to, when it has one
        (a contained resource's references are kept as written)."""
        if res.container is not None:
            return plan.originals
        urls = self.urls
        return tuple(
            urls[id(target)]
            if target is not None and id(target) in urls and (target.container is None or target.container is not res)
            else reference
            for reference, target in zip(plan.originals, plan.targets, strict=True)
        )

    @staticmethod
    def _written(res: Res, plan: _Plan, finals: tuple[str, ...]) -> dict[str, Any]:
        if res.container is not None:
            plan.copy["id"] = contained_id(res)
        else:
            for holder, reference in zip(plan.holders, finals, strict=True):
                holder["reference"] = reference
        return plan.copy


class ServerReferences:
    """References as a FHIR server holds them: `Type/id`. A resource that exists only inside another
    one (contained) has no address on the server: it is contained in the Claim again (`#id`),
    because pointing at its container would give `Claim.patient` or `insurance.coverage` a
    reference of the wrong type. A resource the server cannot name keeps only a display."""

    def __init__(self, index: ResourceIndex, base_url: str) -> None:
        self.index = index
        self.base = base_url.rstrip("/") + "/"
        self.contained: dict[str, dict[str, Any]] = {}

    def relative(self, reference: str) -> str:
        return reference[len(self.base) :] if reference.startswith(self.base) else reference

    def to(self, key: str | None, display: str) -> dict[str, Any]:
        res = self.index.get(key) if key else None
        if res is None:
            if key and "/" in key:
                return {"reference": self.relative(key)}
            return {"display": display}
        if res.container is not None:
            return {"reference": f"#{self._contain(res)}"}
        if res.id is None:
            return {"display": NOT_ON_SERVER}
        return {"reference": f"{res.type}/{res.id}"}

    def _contain(self, res: Res) -> str:
        inner, holders = copy_with_references(res.data)
        inner["id"] = contained_id(res)
        container = res.container
        container_ref = f"{container.type}/{container.id}" if container is not None and container.id else None
        for holder in holders:
            target = holder["reference"]
            # "#x" meant the original container (or a sibling inside it): that is the container.
            if target.startswith("#") and container_ref:
                holder["reference"] = container_ref
            elif not target.startswith("#"):
                holder["reference"] = self.relative(target)
        self.contained.setdefault(inner["id"], inner)
        return str(inner["id"])


def contained_id(res: Res) -> str:
    parent = res.container.id if res.container is not None and res.container.id else "contained"
    return f"{parent}-{res.id or 'x'}"[:64]
