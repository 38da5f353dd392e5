"""The R4 structure check for the common case, a valid resource: the same rules as
`r4schema.validate_with_depth`, walked without building the paths and messages an issue needs.

`valid_depth` answers only "valid, and this deep" or "not sure". At the first element the full
check would report, it gives up and the caller runs the full check, which finds and words the
issues as before: so a resource is reported exactly as `r4schema` reports it, and this walk only
has to be right about the resources it calls valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import r4schema
from .r4schema import ANY_CONTAINED, ANY_RESOURCE, COMPLEX, PEXT, PRIM, RESOURCE, STR, Table


def valid_depth(resource: object) -> int | None:
    """The JSON nesting depth of a resource the R4 structure rules accept (as
    `r4schema.validate_with_depth` counts it), or None when the full check must decide."""
    try:
        return _walk(resource)
    except Exception:  # pragma: no cover - the full check decides (and reports) whatever this trips on
        return None


def _walk(root: object) -> int | None:
    checkers = r4schema.primitive_checkers()
    types = r4schema.r4_resource_types()
    stack: list[tuple[Any, Table | None, str, int]] = [(root, None, ANY_RESOURCE, 1)]
    deepest = 1
    while stack:
        obj, table, expected, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if table is None:
            if not (type(obj) is dict or isinstance(obj, Mapping)):
                return None
            rtype = obj.get("resourceType")
            if type(rtype) is not str or rtype not in types:
                return None
            if expected != ANY_RESOURCE and expected != ANY_CONTAINED and rtype != expected:
                return None
            if expected == ANY_CONTAINED and "contained" in obj:
                return None
            table = r4schema.resource_table(rtype)
        elements = table.elements
        groups: dict[str, str] | None = None
        for key, value in obj.items():
            spec = elements.get(key)
            if spec is None or value is None:
                return None
            kind, target, is_array, group, tname = spec
            if group is not None:
                variant = key[1:] if key[0] == "_" else key
                if groups is None:
                    groups = {group: variant}
                elif groups.setdefault(group, variant) != variant:
                    return None
            if not is_array:
                if kind == STR:
                    if type(value) is str and value and target(value) is not None:
                        continue
                    if checkers[tname](value) is not None:
                        return None
                elif type(value) is list:
                    return None
                elif kind == COMPLEX or kind == PEXT:
                    if not (type(value) is dict or isinstance(value, Mapping)):
                        return None
                    stack.append((value, target, "", depth + 1))
                elif kind == PRIM:
                    if target(value) is not None:
                        return None
                elif kind == RESOURCE:
                    stack.append((value, None, target, depth + 1))
                continue
            if type(value) is not list or not value:
                return None
            if depth + 1 > deepest:
                deepest = depth + 1
            if kind == COMPLEX:
                for item in value:
                    if not (type(item) is dict or isinstance(item, Mapping)):
                        return None
                    stack.append((item, target, "", depth + 2))
            elif kind == STR or kind == PRIM:
                check = checkers[tname]
                ext: Any = None
                for i, item in enumerate(value):
                    if kind == STR and type(item) is str and item and target(item) is not None:
                        continue
                    if item is None:
                        if ext is None:
                            ext = obj.get("_" + key)
                            if type(ext) is not list:
                                ext = ()
                        if i >= len(ext) or ext[i] is None:
                            return None
                        continue
                    if check(item) is not None:
                        return None
            elif kind == PEXT:
                base = obj.get(key[1:])
                if base is not None and (type(base) is not list or len(base) != len(value)):
                    return None
                for item in value:
                    if item is None:
                        if base is None:
                            return None
                    elif type(item) is dict or isinstance(item, Mapping):
                        stack.append((item, target, "", depth + 2))
                    else:
                        return None
            elif kind == RESOURCE:
                nested = ANY_CONTAINED if key == "contained" else target
                for item in value:
                    stack.append((item, None, nested, depth + 2))
        for _name, keys in table.required:
            for k in keys:
                if k in obj:
                    break
            else:
                return None
    return deepest
