// Bulk Data Access IG (v2.0.0) $export for the test server: kick-off at the system level
// (`[base]/$export`), for all patients (`[base]/Patient/$export`) or for a Group
// (`[base]/Group/[id]/$export`), asynchronous status polling with `Retry-After` and `X-Progress`,
// the completion manifest, NDJSON file downloads and `DELETE` of a job. Jobs and files live in
// memory, like everything else on this server.
//
// server.mjs calls `handleBulkExport(req, res, url, context)` first for every request; it answers
// the requests that are its own and returns true, and returns false for everything else.
//
// Settings (environment):
//   FHIR_EXPORT_POLLS        status polls answered 202 before the manifest (default 1)
//   FHIR_EXPORT_RETRY_AFTER  the Retry-After seconds of a 202 (default 1)
//   FHIR_EXPORT_FILE_LINES   at most this many resources per file, so a type may span files (default 1000)

import { randomUUID } from 'node:crypto';

const POLLS = Number(process.env.FHIR_EXPORT_POLLS ?? 1);
const RETRY_AFTER = String(process.env.FHIR_EXPORT_RETRY_AFTER ?? 1);
const FILE_LINES = Math.max(1, Number(process.env.FHIR_EXPORT_FILE_LINES ?? 1000));
const NDJSON_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);
const PATIENT_ELEMENTS = ['subject', 'patient', 'beneficiary'];

const jobs = new Map(); // job id -> { request, transactionTime, files: [{type, lines}], polls, error }

function outcome(status, code, text) {
  return [status, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] }];
}

function reply(res, [status, body], headers = {}, contentType = 'application/fhir+json') {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': `${contentType}; charset=utf-8`, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

async function readParameters(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks).toString('utf8');
  if (!raw.trim()) {
    return new URLSearchParams();
  }
  const body = JSON.parse(raw);
  const params = new URLSearchParams();
  for (const p of body.parameter ?? []) {
    const value = p.valueString ?? p.valueInstant ?? p.valueCode ?? p.valueUri;
    if (value !== undefined) {
      params.append(p.name, value);
    }
  }
  return params;
}

function patientOf(resource) {
  if (resource.resourceType === 'Patient') {
    return `Patient/${resource.id}`;
  }
  for (const element of PATIENT_ELEMENTS) {
    const reference = resource[element]?.reference;
    if (typeof reference === 'string') {
      const parts = reference.split('/');
      return parts.length >= 2 ? parts.slice(-2).join('/') : reference;
    }
  }
  return undefined;
}

function referencesOf(value, found = new Set()) {
  if (Array.isArray(value)) {
    value.forEach((item) => referencesOf(item, found));
  } else if (value && typeof value === 'object') {
    if (typeof value.reference === 'string') {
      found.add(value.reference.split('/').slice(-2).join('/'));
    }
    Object.values(value).forEach((item) => referencesOf(item, found));
  }
  return found;
}

// The resources of the export: every live resource of the requested types changed since `since`;
// for a Group (or Patient/$export), those of its member patients plus what they reference (the
// IG lets a server add the resources needed to read them: Organizations, Practitioners, …).
function select(repo, { types, since, members, isDeleted }) {
  const all = [];
  for (const [type, byId] of repo.resources) {
    for (const resource of byId.values()) {
      if (!isDeleted(resource)) {
        all.push(resource);
      }
    }
  }
  const changed = (r) => !since || (r.meta?.lastUpdated && Date.parse(r.meta.lastUpdated) >= since);
  const wanted = (r) => (!types || types.has(r.resourceType)) && changed(r);
  if (!members) {
    return all.filter(wanted);
  }
  const own = all.filter((r) => members.has(patientOf(r)));
  const keys = new Set(own.map((r) => `${r.resourceType}/${r.id}`));
  const referenced = new Set();
  own.forEach((r) => referencesOf(r, referenced));
  const supporting = all.filter((r) => !keys.has(`${r.resourceType}/${r.id}`) && referenced.has(`${r.resourceType}/${r.id}`) && !patientOf(r));
  return [...own, ...supporting].filter(wanted);
}

function kickOff(req, url, params, level, groupId, ctx) {
  const prefer = String(req.headers.prefer ?? '');
  if (!/respond-async/.test(prefer)) {
    return outcome(400, 'invalid', 'A Bulk Data kick-off needs the header Prefer: respond-async');
  }
  const format = params.get('_outputFormat');
  if (format && !NDJSON_FORMATS.has(format)) {
    return outcome(400, 'not-supported', `_outputFormat ${format} is not supported (use application/fhir+ndjson)`);
  }
  let types;
  if (params.get('_type')) {
    types = new Set(params.getAll('_type').flatMap((v) => v.split(',')).map((t) => t.trim()).filter(Boolean));
    const unknown = [...types].filter((t) => !ctx.isResourceType(t));
    if (unknown.length) {
      return outcome(400, 'not-supported', `_type names unknown resource types: ${unknown.join(', ')}`);
    }
  }
  let since;
  if (params.get('_since')) {
    since = Date.parse(params.get('_since'));
    if (Number.isNaN(since)) {
      return outcome(400, 'invalid', '_since must be a FHIR instant');
    }
  }
  let members;
  if (level === 'group') {
    const group = ctx.repo.resources.get('Group')?.get(groupId);
    if (!group || ctx.isDeleted(group)) {
      return outcome(404, 'not-found', `Group/${groupId} is not known`);
    }
    members = new Set((group.member ?? []).map((m) => m.entity?.reference).filter(Boolean).map((r) => r.split('/').slice(-2).join('/')));
  } else if (level === 'patient') {
    members = new Set([...(ctx.repo.resources.get('Patient')?.values() ?? [])].map((p) => `Patient/${p.id}`));
  }
  const chosen = select(ctx.repo, { types, since, members, isDeleted: ctx.isDeleted });
  const byType = new Map();
  for (const resource of chosen) {
    if (!byType.has(resource.resourceType)) {
      byType.set(resource.resourceType, []);
    }
    byType.get(resource.resourceType).push(JSON.stringify(resource));
  }
  const files = [];
  for (const [type, lines] of [...byType.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    for (let at = 0; at < lines.length; at += FILE_LINES) {
      files.push({ type, lines: lines.slice(at, at + FILE_LINES) });
    }
  }
  const id = randomUUID();
  jobs.set(id, { request: url.href, transactionTime: new Date().toISOString(), files, polls: POLLS });
  ctx.log(`$export job ${id}: ${chosen.length} resources in ${files.length} files`);
  return [202, undefined, { 'content-location': `${ctx.base}/$export-status/${id}` }];
}

function status(job, id, ctx) {
  if (job.polls > 0) {
    job.polls -= 1;
    return [202, undefined, { 'retry-after': RETRY_AFTER, 'x-progress': `preparing files (${job.files.length} to write)` }];
  }
  return [
    200,
    {
      transactionTime: job.transactionTime,
      request: job.request,
      requiresAccessToken: false,
      output: job.files.map((file, n) => ({
        type: file.type,
        url: `${ctx.base}/$export-file/${id}/${n}`,
        count: file.lines.length,
      })),
      error: [],
    },
    { expires: new Date(Date.now() + 3600_000).toUTCString() },
  ];
}

export async function handleBulkExport(req, res, url, ctx) {
  const path = url.pathname.slice(ctx.basePath.length).replace(/^\/+|\/+$/g, '');
  const kick = path.match(/^(?:(Patient)|Group\/([A-Za-z0-9\-.]{1,64}))?\/?\$export$/);
  if (kick && (req.method === 'GET' || req.method === 'POST')) {
    const params = req.method === 'POST' ? await readParameters(req) : new URLSearchParams(url.search);
    const level = kick[1] ? 'patient' : kick[2] ? 'group' : 'system';
    const [statusCode, body, headers = {}] = kickOff(req, url, params, level, kick[2], ctx);
    reply(res, [statusCode, body], headers);
    return true;
  }
  const poll = path.match(/^\$export-status\/([0-9a-f-]{36})$/);
  if (poll) {
    const job = jobs.get(poll[1]);
    if (!job) {
      reply(res, outcome(404, 'not-found', 'No such export job (finished and deleted, or never started)'));
    } else if (req.method === 'DELETE') {
      jobs.delete(poll[1]);
      reply(res, [202, undefined]);
    } else {
      const [statusCode, body, headers] = status(job, poll[1], ctx);
      reply(res, [statusCode, body], headers, statusCode === 200 ? 'application/json' : 'application/fhir+json');
    }
    return true;
  }
  const file = path.match(/^\$export-file\/([0-9a-f-]{36})\/(\d+)$/);
  if (file && req.method === 'GET') {
    const content = jobs.get(file[1])?.files[Number(file[2])];
    if (!content) {
      reply(res, outcome(404, 'not-found', 'No such export file'));
    } else {
      const text = content.lines.length ? content.lines.join('\n') + '\n' : '';
      res.writeHead(200, { 'content-type': 'application/fhir+ndjson', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }
    return true;
  }
  return false;
}
