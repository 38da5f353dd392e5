// Subscriptions R5 Backport (R4) topic-based Subscriptions for the test server, and a switch that
// drops deliveries (a server that gave up). server.mjs calls in at a few points (see `topics.*`).
//
// A Subscription is topic-based when its meta.profile names backport-subscription or its criteria
// is a canonical URL (the topic) instead of a search. The topic's filter is the search in
// `_criteria.extension[backport-filter-criteria]` (e.g. `Procedure?code=...`); a write that matches
// it is one event. Each Subscription numbers its events from 1 and keeps them (the last
// MAX_KEPT_EVENTS) for `$events`.
//
//   notification  POST {endpoint}: a history Bundle, first entry a Parameters
//                 (backport-subscription-status-r4: subscription, topic, status, type,
//                 events-since-subscription-start, notification-event{event-number, timestamp,
//                 focus}), then the focus (full-resource) or its fullUrl only (id-only; the
//                 default); `empty` sends neither focus nor entry.
//   heartbeat     every channel.extension[backport-heartbeat-period] seconds, type heartbeat.
//   $status       GET|POST Subscription/{id}/$status: a searchset Bundle with the status Parameters.
//   $events       GET|POST Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=: a
//                 history Bundle (type query-event) with the kept events in that range.
//   drop switch   POST [base]/$test-deliveries with Parameters {drop: boolean} (every delivery,
//                 rest-hook and topic-based, heartbeats included, is dropped while true) or
//                 {drop-next: integer} (the next N deliveries); GET shows the state. A dropped
//                 event keeps its number, as on a server that gave up delivering it.
// Deliveries go out in order per Subscription, with the rest-hook retries (0.5, 1, 2 s), then
// are dropped and logged.

import { allOk, badRequest, normalizeOperationOutcome, OperationOutcomeError, parseSearchRequest, resourceMatchesSubscriptionCriteria } from '@medplum/core';
import { randomUUID } from 'node:crypto';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
const SUBSCRIPTION_PROFILE = `${BACKPORT}/backport-subscription`;
const STATUS_PROFILE = `${BACKPORT}/backport-subscription-status-r4`;
const FILTER_URL = `${BACKPORT}/backport-filter-criteria`;
const HEARTBEAT_URL = `${BACKPORT}/backport-heartbeat-period`;
const CONTENT_URL = `${BACKPORT}/backport-payload-content`;
const RETRY_DELAYS_MS = [500, 1000, 2000];
const TIMEOUT_MS = 10_000;
const MAX_KEPT_EVENTS = 10_000;

let ctx; // { router, repo, base, log }
const state = new Map(); // Subscription id -> { count, events: [{ number, timestamp, focus, resource }] }
const chains = new Map(); // Subscription id -> promise chain (keeps per-Subscription order)
const heartbeats = new Map(); // Subscription id -> interval timer
const drop = { all: false, next: 0, dropped: 0 };

function owns(resource) {
  if (resource?.resourceType !== 'Subscription') {
    return false;
  }
  if ((resource.meta?.profile ?? []).includes(SUBSCRIPTION_PROFILE)) {
    return true;
  }
  return /^[a-z][a-z0-9+.-]*:\/\//i.test((resource.criteria ?? '').split('?')[0]);
}

function filterOf(subscription) {
  return (subscription._criteria?.extension ?? []).find((e) => e.url === FILTER_URL)?.valueString;
}

function heartbeatOf(subscription) {
  const value = (subscription.channel?.extension ?? []).find((e) => e.url === HEARTBEAT_URL)?.valueUnsignedInt;
  return Number.isInteger(value) && value > 0 ? value : undefined;
}

function contentOf(subscription) {
  return (subscription.channel?._payload?.extension ?? []).find((e) => e.url === CONTENT_URL)?.valueCode ?? 'id-only';
}

/** Checks a topic-based Subscription being written; `requested` becomes `active`. */
function prepare(resource) {
  const reject = (text, path) => new OperationOutcomeError(badRequest(text, `Subscription.${path}`));
  const filter = filterOf(resource);
  if (!filter || !/^[A-Z][A-Za-z]+\?/.test(filter)) {
    throw reject('A topic-based Subscription needs a backport-filter-criteria search such as Procedure?code=x', 'criteria');
  }
  try {
    parseSearchRequest(filter);
  } catch (err) {
    throw reject(`Invalid filter criteria: ${err?.message ?? err}`, 'criteria');
  }
  if (resource.channel?.type !== 'rest-hook' || !/^https?:\/\//.test(resource.channel?.endpoint ?? '')) {
    throw reject('A topic-based Subscription here needs a rest-hook channel with an http(s) endpoint', 'channel');
  }
  return resource.status === 'requested' ? { ...resource, status: 'active' } : resource;
}

function stateOf(id) {
  let found = state.get(id);
  if (!found) {
    found = { count: 0, events: [] };
    state.set(id, found);
  }
  return found;
}

function active() {
  return [...(ctx.repo.resources.get('Subscription')?.values() ?? [])].filter(
    (s) => owns(s) && s.status === 'active' && !(s.end && Date.parse(s.end) < Date.now())
  );
}

function current(id) {
  return ctx.repo.resources.get('Subscription')?.get(id);
}

// ------------------------------------------------------------------------------ notifications

function statusParameters(subscription, type, events) {
  const parameter = [
    { name: 'subscription', valueReference: { reference: `${ctx.base}/Subscription/${subscription.id}` } },
    { name: 'topic', valueCanonical: subscription.criteria },
    { name: 'status', valueCode: subscription.status },
    { name: 'type', valueCode: type },
    { name: 'events-since-subscription-start', valueString: String(stateOf(subscription.id).count) },
  ];
  for (const event of events) {
    const part = [
      { name: 'event-number', valueString: String(event.number) },
      { name: 'timestamp', valueInstant: event.timestamp },
    ];
    if (contentOf(subscription) !== 'empty') {
      part.push({ name: 'focus', valueReference: { reference: `${ctx.base}/${event.focus}` } });
    }
    parameter.push({ name: 'notification-event', part });
  }
  return { resourceType: 'Parameters', id: randomUUID(), meta: { profile: [STATUS_PROFILE] }, parameter };
}

function notificationBundle(subscription, type, events) {
  const entry = [
    {
      fullUrl: `urn:uuid:${randomUUID()}`,
      resource: statusParameters(subscription, type, events),
      request: { method: 'GET', url: `Subscription/${subscription.id}/$status` },
      response: { status: '200' },
    },
  ];
  const content = contentOf(subscription);
  if (content !== 'empty') {
    for (const event of events) {
      const item = { fullUrl: `${ctx.base}/${event.focus}`, request: { method: 'PUT', url: event.focus }, response: { status: '200' } };
      if (content === 'full-resource') {
        item.resource = event.resource;
      }
      entry.push(item);
    }
  }
  return { resourceType: 'Bundle', id: randomUUID(), type: 'history', timestamp: new Date().toISOString(), entry };
}

/** True when this delivery is to be dropped (the switch); logs it. */
function dropping(what) {
  if (!drop.all && drop.next <= 0) {
    return false;
  }
  if (!drop.all) {
    drop.next -= 1;
  }
  drop.dropped += 1;
  ctx.log(`${what}: dropped (test switch)`);
  return true;
}

function send(subscription, bundle, what) {
  const previous = chains.get(subscription.id) ?? Promise.resolve();
  const chain = previous.then(() => deliver(subscription, bundle, what));
  chains.set(subscription.id, chain);
  chain.finally(() => {
    if (chains.get(subscription.id) === chain) {
      chains.delete(subscription.id);
    }
  });
}

async function deliver(subscription, bundle, what) {
  const label = `topic Subscription/${subscription.id} ${what}`;
  if (dropping(label)) {
    return;
  }
  const headers = new Headers({ 'Content-Type': 'application/fhir+json' });
  for (const line of subscription.channel.header ?? []) {
    const colon = String(line).indexOf(':');
    if (colon > 0) {
      headers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
  }
  const body = JSON.stringify(bundle);
  for (let attempt = 0; ; attempt++) {
    let problem;
    try {
      const res = await fetch(subscription.channel.endpoint, { method: 'POST', headers, body, signal: AbortSignal.timeout(TIMEOUT_MS) });
      await res.arrayBuffer();
      if (res.ok) {
        ctx.log(`${label} -> ${res.status}`);
        return;
      }
      problem = `HTTP ${res.status}`;
    } catch (err) {
      problem = err?.cause?.code ?? err?.message ?? String(err);
    }
    if (attempt >= RETRY_DELAYS_MS.length) {
      ctx.log(`${label} failed (${problem}) after ${attempt + 1} attempts; notification dropped`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
  }
}

function scheduleHeartbeat(subscription) {
  clearInterval(heartbeats.get(subscription.id));
  heartbeats.delete(subscription.id);
  const period = heartbeatOf(subscription);
  if (!owns(subscription) || subscription.status !== 'active' || !period) {
    return;
  }
  const timer = setInterval(() => {
    const now = current(subscription.id);
    if (!now || !owns(now) || now.status !== 'active') {
      clearInterval(timer);
      heartbeats.delete(subscription.id);
      return;
    }
    send(now, notificationBundle(now, 'heartbeat', []), 'heartbeat');
  }, period * 1000);
  timer.unref();
  heartbeats.set(subscription.id, timer);
}

/** After a committed write: a Subscription (re)schedules its heartbeat; anything else may be an event. */
function onWrite(resource, interaction, previous) {
  if (resource.resourceType === 'Subscription') {
    if (owns(resource)) {
      stateOf(resource.id);
      scheduleHeartbeat(resource);
    }
    return;
  }
  setImmediate(() => {
    notify(resource, interaction, previous).catch((err) => ctx.log(`topic dispatch error: ${err?.message ?? err}`));
  });
}

async function notify(resource, interaction, previous) {
  for (const subscription of active()) {
    let matches = false;
    try {
      matches = await resourceMatchesSubscriptionCriteria({
        resource,
        subscription: { ...subscription, criteria: filterOf(subscription) },
        context: { interaction },
        getPreviousResource: async () => previous,
      });
    } catch (err) {
      ctx.log(`topic Subscription/${subscription.id}: filter error: ${err?.message ?? err}`);
    }
    if (!matches) {
      continue;
    }
    const kept = stateOf(subscription.id);
    kept.count += 1;
    const event = {
      number: kept.count,
      timestamp: new Date().toISOString(),
      focus: `${resource.resourceType}/${resource.id}`,
      resource: structuredClone(resource),
    };
    kept.events.push(event);
    kept.events.splice(0, Math.max(0, kept.events.length - MAX_KEPT_EVENTS));
    send(subscription, notificationBundle(subscription, 'event-notification', [event]), `event ${event.number}`);
  }
}

// ------------------------------------------------------------------------------ operations

function number(value) {
  const text = Array.isArray(value) ? value.at(-1) : value;
  const parsed = Number.parseInt(text ?? '', 10);
  return Number.isNaN(parsed) ? undefined : parsed;
}

function subscriptionFor(req) {
  const subscription = current(req.params.id);
  if (!subscription) {
    throw new OperationOutcomeError({
      resourceType: 'OperationOutcome',
      id: 'not-found',
      issue: [{ severity: 'error', code: 'not-found', details: { text: `Subscription/${req.params.id} not found` } }],
    });
  }
  if (!owns(subscription)) {
    throw new OperationOutcomeError(badRequest('Not a topic-based Subscription'));
  }
  return subscription;
}

function parametersOf(req) {
  const query = { ...req.query };
  for (const p of req.body?.resourceType === 'Parameters' ? req.body.parameter ?? [] : []) {
    query[p.name] = String(p.valueUnsignedInt ?? p.valueInteger ?? p.valueString ?? p.valueInteger64 ?? p.valueCode ?? '');
  }
  return query;
}

async function statusOperation(req) {
  try {
    const subscription = subscriptionFor(req);
    const parameters = statusParameters(subscription, 'query-status', []);
    return [allOk, { resourceType: 'Bundle', type: 'searchset', total: 1, entry: [{ resource: parameters, search: { mode: 'match' } }] }];
  } catch (err) {
    return [normalizeOperationOutcome(err)];
  }
}

async function eventsOperation(req) {
  try {
    const subscription = subscriptionFor(req);
    const query = parametersOf(req);
    const since = number(query.eventsSinceNumber) ?? 1;
    const until = number(query.eventsUntilNumber) ?? Number.MAX_SAFE_INTEGER;
    const events = stateOf(subscription.id).events.filter((e) => e.number >= since && e.number <= until);
    return [allOk, notificationBundle(subscription, 'query-event', events)];
  } catch (err) {
    return [normalizeOperationOutcome(err)];
  }
}

async function deliveriesOperation(req) {
  if (req.method === 'POST') {
    for (const p of req.body?.resourceType === 'Parameters' ? req.body.parameter ?? [] : []) {
      if (p.name === 'drop' && typeof p.valueBoolean === 'boolean') {
        drop.all = p.valueBoolean;
        drop.next = 0;
      } else if (p.name === 'drop-next' && Number.isInteger(p.valueInteger)) {
        drop.next = p.valueInteger;
      } else {
        return [badRequest('Give drop (valueBoolean) or drop-next (valueInteger)')];
      }
    }
    ctx.log(`deliveries: drop ${drop.all ? 'all' : `next ${drop.next}`}`);
  }
  return [
    allOk,
    {
      resourceType: 'Parameters',
      parameter: [
        { name: 'drop', valueBoolean: drop.all },
        { name: 'drop-next', valueInteger: drop.next },
        { name: 'dropped', valueInteger: drop.dropped },
      ],
    },
  ];
}

/** Adds $status and $events to the Subscription entry of the CapabilityStatement (idempotent). */
function describe(statement) {
  const subscription = statement.rest?.[0]?.resource?.find((r) => r.type === 'Subscription');
  if (subscription && !subscription.operation.some((o) => o.name === 'events')) {
    subscription.operation.push(
      { name: 'status', definition: 'http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status' },
      { name: 'events', definition: 'http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events' }
    );
  }
  return statement;
}

function install(context) {
  ctx = context;
  for (const method of ['GET', 'POST']) {
    ctx.router.add(method, 'Subscription/:id/$status', statusOperation, 'operation');
    ctx.router.add(method, 'Subscription/:id/$events', eventsOperation, 'operation');
    ctx.router.add(method, '$test-deliveries', deliveriesOperation, 'operation');
  }
}

export const topics = { owns, prepare, onWrite, dropping, describe, install };
