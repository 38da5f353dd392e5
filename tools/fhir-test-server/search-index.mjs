// Narrows a search to the resources that can match before Medplum's MemoryRepository looks at them.
//
// MemoryRepository.searchSync evaluates every filter's FHIRPath expression on every stored resource
// of the type. Several common R4 parameters (`encounter`, `date`, `code`, `patient`) are defined
// for many resource types at once ("Composition.encounter | DeviceRequest.encounter | ..."), and
// Medplum's evaluator tries each type name as a property of the resource: `Procedure?encounter=`
// costs about 0.25 ms per stored Procedure, so a sync's `_revinclude=Procedure:encounter` over 300
// Procedures took 74 ms, and the service's per-sync batch dominated the test server's time.
//
// Here the values a filter compares are computed once per stored resource and kept beside it.
// Stored resources are never changed in place (MemoryRepository stores a fresh object on every
// write and hands out copies), so an object's values stay right for its lifetime and no write,
// delete or transaction rollback has to update anything. A search with an exact reference filter
// (`subject=Patient/x`, `part-of=Procedure/a,Procedure/b`) or an exact token filter
// (`identifier=system|value`, `code=a,b`) keeps only the resources whose kept values contain one of
// the filter's values, in their stored order; Medplum's own search then runs unchanged on those, so
// matches, order, sorting, paging, `total` and includes are what a full scan gives. The values are
// computed with Medplum's own functions (evalFhirPathTyped, convertToSearchableReferences,
// convertToSearchableTokens), the ones its matching uses, so a resource left out could not match.
//
// Filters that narrow nothing (for them every resource is looked at, as before): modifiers and
// prefixes (`:not`, `:missing`, `ge`), bare ids (`patient=x` matches any reference ending in
// `/x`), `system|` (any code of a system), string, date and uri parameters; nor does any search
// with a chained filter (it reads other resources through the repository's maps, which the
// narrowed view replaces for the searched type). One difference is possible, for a resource on
// which a filter's FHIRPath throws (Medplum's search expressions do not on valid R4): a full scan
// fails on it unless an earlier filter of the search has already failed; narrowed, it is left out
// when another filter's values exclude it.
import {
  convertToSearchableReferences,
  convertToSearchableTokens,
  evalFhirPathTyped,
  globalSchema,
  LRUCache,
  Operator,
  splitSearchOnComma,
  toTypedValue,
} from '@medplum/core';

const kept = new WeakMap(); // stored resource -> Map("reference|token \0 expression" -> Set of values, or null: unknown)
const expressions = new LRUCache(1000);

/** The values `filter` is compared with: reference strings, or lower-cased token codes. */
function wantedValues(resourceType, filter) {
  if (filter.operator !== Operator.EQUALS || filter.code.includes('.')) {
    return undefined;
  }
  const param = globalSchema.types[resourceType]?.searchParams?.[filter.code];
  if (typeof param?.expression !== 'string') {
    return undefined;
  }
  const values = splitSearchOnComma(filter.value);
  if (param.type === 'reference') {
    // Only typed references ("Type/id") are compared as whole strings; a bare id matches by suffix.
    return values.every((v) => v.includes('/')) ? wanted('reference', param, new Set(values)) : undefined;
  }
  if (param.type === 'token') {
    const codes = new Set();
    for (const value of values) {
      // As Medplum's matchesTokenValue: the code is the part after the first `|`, compared lower-cased;
      // `system|` (any code of a system) cannot be looked up by code.
      const code = value.includes('|') ? value.split('|')[1]?.toLowerCase() : value.toLowerCase();
      if (!code) {
        return undefined;
      }
      codes.add(code);
    }
    return wanted('token', param, codes);
  }
  return undefined;
}

// The key of a filter's kept values is built once per search: expressions are long (a union over
// tens of resource types), and a key built per resource would be hashed afresh for each.
function wanted(kind, param, values) {
  return { kind, expression: param.expression, key: `${kind}\0${param.expression}`, values };
}

function valuesOf(resource, { kind, expression, key }) {
  let byExpression = kept.get(resource);
  if (!byExpression) {
    byExpression = new Map();
    kept.set(resource, byExpression);
  }
  if (byExpression.has(key)) {
    return byExpression.get(key);
  }
  let values;
  try {
    const typed = evalFhirPathTyped(expression, [toTypedValue(resource)], undefined, expressions);
    values =
      kind === 'reference'
        ? new Set(convertToSearchableReferences(typed))
        : new Set(convertToSearchableTokens(typed).map((t) => t.value?.toLowerCase()));
  } catch {
    values = null; // kept as a candidate: the full match then fails (or throws) as it would have
  }
  byExpression.set(key, values);
  return values;
}

/**
 * The resources of the searched type that can match `searchRequest`, as a Map in stored order, or
 * undefined when no filter can be looked up (then every resource is looked at, as before).
 */
export function candidates(resources, searchRequest) {
  const filters = searchRequest.filters ?? [];
  if (filters.some((f) => f.code.includes('.'))) {
    return undefined; // a chained filter reads other resources through the repository's maps
  }
  const lookups = filters.map((f) => wantedValues(searchRequest.resourceType, f)).filter(Boolean);
  const all = resources.get(searchRequest.resourceType);
  if (!lookups.length || !all) {
    return undefined;
  }
  const narrowed = new Map();
  for (const [id, resource] of all) {
    const possible = lookups.every((filter) => {
      const have = valuesOf(resource, filter);
      if (have === null) {
        return true;
      }
      for (const value of have) {
        if (filter.values.has(value)) {
          return true;
        }
      }
      return false;
    });
    if (possible) {
      narrowed.set(id, resource);
    }
  }
  return narrowed;
}

/**
 * Runs MemoryRepository's `searchSync` (passed in) for `repo` on the candidates only: on a view of
 * the repository whose map of the searched type holds just them (the other types as they are).
 */
export function narrowedSearch(repo, searchRequest, searchSync) {
  const only = candidates(repo.resources, searchRequest);
  if (!only) {
    return searchSync.call(repo, searchRequest);
  }
  const view = new Map(repo.resources);
  view.set(searchRequest.resourceType, only);
  return searchSync.call(Object.create(repo, { resources: { value: view } }), searchRequest);
}
