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
// the filter's values, in their stored order. The values are computed with Medplum's own functions
// (evalFhirPathTyped, convertToSearchableReferences, convertToSearchableTokens), the ones its
// matching uses, and compared as its matchesReferenceFilter and matchesTokenValue compare them, so
// a resource left out could not match and a resource kept matches those filters. The search's
// other filters (dates, strings, modifiers) are then answered for each resource kept by Medplum's
// own matchesSearchRequest, one filter at a time, and the answer is kept beside the resource too
// (at most 64 a resource): a sync's Procedure and Encounter searches by date repeat, and the
// multi-type `date` expression costs 0.6-0.8 ms an evaluation. Medplum's search then runs on the
// resources left with no filter it has to evaluate again, so matches, order, sorting, paging,
// `total` and includes are what a full scan gives.
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
  matchesSearchRequest,
  Operator,
  splitSearchOnComma,
  toTypedValue,
} from '@medplum/core';

const kept = new WeakMap(); // stored resource -> Map(key of kind and expression -> Set of keys, or null: unknown)
const expressions = new LRUCache(1000);

/**
 * What `filter` looks for, as keys of kept values: reference strings ("Patient/x"), or for tokens
 * `s` + `system|code` (lower-cased; no system: `s|code`) and `c` + `code` (any system). Undefined
 * when the filter cannot be looked up.
 */
function lookupOf(resourceType, filter) {
  if (filter.operator !== Operator.EQUALS || filter.code.includes('.')) {
    return undefined;
  }
  const param = globalSchema.types[resourceType]?.searchParams?.[filter.code];
  if (typeof param?.expression !== 'string') {
    return undefined;
  }
  const values = splitSearchOnComma(filter.value);
  if (param.type === 'reference') {
    // As matchesReferenceFilter: a typed reference ("Type/id") is compared as a whole string; a
    // bare id matches by suffix, and an empty value matches a resource without the reference.
    return values.every((v) => v.includes('/')) ? lookup(filter, 'reference', param, new Set(values)) : undefined;
  }
  if (param.type === 'token') {
    const keys = new Set();
    for (const value of values) {
      // As matchesTokenValue: `system|code` (the parts before and after the first `|`, up to the
      // next), `|code` (no system) or `code` (any system), compared lower-cased; `system|` (any
      // code of a system) is not looked up.
      if (!value.includes('|')) {
        keys.add(`c${value.toLowerCase()}`);
        continue;
      }
      const [system, code] = value.split('|').map((part) => part.toLowerCase());
      if (!code) {
        return undefined;
      }
      keys.add(`s${system}|${code}`);
    }
    return lookup(filter, 'token', param, keys);
  }
  return undefined;
}

// The key of a filter's kept values is built once per search: expressions are long (a union over
// tens of resource types), and a key built per resource would be hashed afresh for each.
function lookup(filter, kind, param, keys) {
  return { filter, kind, expression: param.expression, key: `${kind}\0${param.expression}`, keys };
}

/**
 * The keys a token has: `s` + `system|code` and `c` + `code`. A system with a `|` in it gives a key
 * no filter's can equal (the filter's parts have none), as it matches no filter in Medplum.
 */
function tokenKeys(tokens) {
  const keys = new Set();
  for (const { system, value } of tokens) {
    if (typeof value === 'string') {
      const code = value.toLowerCase();
      keys.add(`s${system ? system.toLowerCase() : ''}|${code}`);
      keys.add(`c${code}`);
    }
  }
  return keys;
}

function keysOf(resource, { kind, expression, key }) {
  let byExpression = kept.get(resource);
  if (!byExpression) {
    byExpression = new Map();
    kept.set(resource, byExpression);
  }
  if (byExpression.has(key)) {
    return byExpression.get(key);
  }
  let keys;
  try {
    const typed = evalFhirPathTyped(expression, [toTypedValue(resource)], undefined, expressions);
    keys =
      kind === 'reference'
        ? new Set(convertToSearchableReferences(typed))
        : tokenKeys(convertToSearchableTokens(typed));
  } catch {
    keys = null; // unknown: kept as a candidate, and the filter left to Medplum, which fails as it would have
  }
  byExpression.set(key, keys);
  return keys;
}

/**
 * The resources of the searched type that can match `searchRequest` (`matches`, a Map in stored
 * order) and the filters they match for certain (`decided`: Medplum need not evaluate those on
 * them again); undefined when no filter can be looked up (then every resource is looked at, and
 * nothing is kept).
 */
export function candidates(resources, searchRequest) {
  const filters = searchRequest.filters ?? [];
  if (filters.some((f) => f.code.includes('.'))) {
    return undefined; // a chained filter reads other resources through the repository's maps
  }
  const lookups = filters.map((f) => lookupOf(searchRequest.resourceType, f)).filter(Boolean);
  const all = resources.get(searchRequest.resourceType);
  if (!lookups.length || !all) {
    return undefined;
  }
  const matches = new Map();
  const unknown = new Set(); // filters some candidate's values could not be computed for
  for (const [id, resource] of all) {
    let unsure;
    const possible = lookups.every((wanted) => {
      const have = keysOf(resource, wanted);
      if (have === null) {
        (unsure ??= []).push(wanted.filter);
        return true;
      }
      for (const key of have) {
        if (wanted.keys.has(key)) {
          return true;
        }
      }
      return false;
    });
    if (possible) {
      matches.set(id, resource);
      unsure?.forEach((filter) => unknown.add(filter));
    }
  }
  const decided = new Set(lookups.map((wanted) => wanted.filter).filter((filter) => !unknown.has(filter)));
  // The search's other filters (dates, strings, modifiers) on the resources left: Medplum's own
  // answer for one filter on one stored resource is kept beside it, as its values are.
  for (const filter of filters) {
    if (decided.has(filter)) {
      continue;
    }
    try {
      for (const [id, resource] of matches) {
        if (!answerOf(resource, searchRequest.resourceType, filter)) {
          matches.delete(id); // fails this filter, so the whole search
        }
      }
      decided.add(filter);
    } catch {
      // left to Medplum, which fails on the same resource
    }
  }
  return { matches, decided };
}

const answered = new WeakMap(); // stored resource -> Map(filter key -> whether it matches)
const MAX_ANSWERS = 64; // per resource; the oldest is forgotten first

function answerOf(resource, resourceType, filter) {
  let answers = answered.get(resource);
  if (!answers) {
    answers = new Map();
    answered.set(resource, answers);
  }
  const key = `${filter.code}\0${filter.operator}\0${filter.value}`;
  let answer = answers.get(key);
  if (answer === undefined) {
    answer = matchesSearchRequest(resource, { resourceType, filters: [filter] });
    if (answers.size >= MAX_ANSWERS) {
      answers.delete(answers.keys().next().value);
    }
    answers.set(key, answer);
  }
  return answer;
}

/**
 * Runs MemoryRepository's `searchSync` (passed in) for `repo` on the candidates only, with the
 * filters they match for certain left out: on a view of the repository whose map of the searched
 * type holds just the candidates (the other types as they are).
 */
export function narrowedSearch(repo, searchRequest, searchSync) {
  const found = candidates(repo.resources, searchRequest);
  if (!found) {
    return searchSync.call(repo, searchRequest);
  }
  const view = new Map(repo.resources);
  view.set(searchRequest.resourceType, found.matches);
  const rest = { ...searchRequest, filters: searchRequest.filters.filter((filter) => !found.decided.has(filter)) };
  return searchSync.call(Object.create(repo, { resources: { value: view } }), rest);
}
