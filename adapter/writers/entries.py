"""How a written Claim points at the resources it names: Bundle entries (each resource once, with a
stable fullUrl, references rewritten to them) or references as a FHIR server holds them.

Shared by the Claim writer (`fhir_claim`) and the PAS request writer (`pas`). A writer that writes
a resource itself instead of copying the input's (the PAS request writes its parties to the PAS
profiles) reserves it first, so every reference to it points at the entry it supplies.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Protocol

from ..decision import name_uuid
from ..fhir.ingest import Res, ResourceIndex
from ..fhir.values import copy_with_references

log = logging.getLogger(__name__)

NOT_ON_SERVER = "not on the FHIR server"


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


class BundleEntries:
    """The Bundle's resources: each once, with a stable fullUrl, references rewritten to them.

    The resources the Claim names were read (and checked as R4) by the reader. What they reference
    in turn is added as far as the input has it, except what cannot be written as valid R4 (left
    out, its reference kept as written) and other patients' data (never copied into a claim).

    A resource the writer `reserve`s is written as it `supply`s it instead of copied (also when the
    input only references it); its entry keeps the fullUrl a copy would have had.
    """

    def __init__(self, index: ResourceIndex, patient: str) -> None:
        self.index = index
        self.patient = patient
        self.order: list[Res | str] = []  # a resource of the input, or the key of a reserved one it lacks
        self.urls: dict[int, str] = {}
        self.reserved: dict[str, str] = {}  # key -> fullUrl
        self.supplied: dict[str, dict[str, Any]] = {}

    def url_of(self, res: Res) -> str:
        key = id(res)
        if key not in self.urls:
            self.urls[key] = entry_url(res)
            self.order.append(res)
        return self.urls[key]

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
        copies: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        done = 0
        while done < len(self.order):
            res = self.order[done]
            done += 1
            if isinstance(res, str) or res.key in self.supplied:
                continue  # written by the writer: it references what it names itself
            copy, holders = copy_with_references(res.data)
            copies[id(res)] = (copy, holders)
            for holder in holders:
                reference = holder["reference"]
                if reference.startswith("#"):
                    continue
                target = self.index.resolve(reference, res)
                if target is not None and id(target) not in self.urls and self._includable(target):
                    self.url_of(target)
        entries = []
        for res in self.order:
            key = res if isinstance(res, str) else res.key
            if key in self.supplied:
                url = self.reserved.get(key) or self.urls[id(res)]
                entries.append({"fullUrl": url, "resource": self.supplied[key]})
                continue
            if isinstance(res, str):
                continue  # reserved but never supplied, and not in the input: nothing to write
            copy, holders = copies[id(res)]
            if res.container is not None:
                copy["id"] = contained_id(res)
            else:
                self._rewrite(holders, res)
            entries.append({"fullUrl": self.urls[id(res)], "resource": copy})
        return entries

    def _rewrite(self, holders: list[dict[str, Any]], res: Res) -> None:
        for holder in holders:
            target = self.index.resolve(holder["reference"], res)
            if target is not None and id(target) in self.urls and target.container is None:
                holder["reference"] = self.urls[id(target)]
            elif target is not None and target.container is not None and target.container is not res:
                holder["reference"] = self.url_of(target) if id(target) in self.urls else holder["reference"]


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
