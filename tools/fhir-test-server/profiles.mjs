// Conformance resources named in FHIR_PROFILES: StructureDefinitions (with snapshots) that resources
// may claim in meta.profile, and the ValueSets / CodeSystems of their required bindings.
//
// FHIR_PROFILES is a comma-separated list of
//   - JSON files: a StructureDefinition, an array of resources or a Bundle of them;
//   - folders: every *.json file in it (an extracted FHIR package: `package/` or its parent);
//   - FHIR packages as published (`.tgz`): every *.json under `package/`, not `package/example/`.
//
// Medplum's validator reads a profile's snapshot alone and checks, for sliced elements, how many
// values fall in each slice, not what is inside them. Before indexing, the snapshot is adapted so
// that what it checks it checks right (each change says only what the referenced definitions
// already say, or removes what Medplum would misread):
//   - an extension slice whose snapshot has no `url` child gets one, fixed to the extension
//     profile's canonical (versions stripped: an instance writes the plain URL);
//   - a `type` discriminator on a resource element (`Bundle.entry` sliced by `resource`) becomes
//     a `value` discriminator on that element's resourceType, fixed per slice; Medplum compares
//     a `type` discriminator with the slice's own type, which for a path other than $this is the
//     backbone element, so no entry would ever match;
//   - slices inside a slice (`supportingInfo:AdditionalInformation.extension:documentInformation`)
//     are removed: Medplum's parser would count them as slices of the outer element, and what
//     they constrain (a slice's content) it does not check anyway;
//   - `|4.0.1` is dropped from references to the core R4 definitions, which Medplum compares as
//     plain URLs.
// What Medplum cannot check (a slice's content, nested slices, X12-bound codes) the adapter's
// tests check by name (tests/test_pas_conformance.py).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { indexStructureDefinitionBundle, isResourceType } from '@medplum/core';

const CONFORMANCE = new Set(['StructureDefinition', 'ValueSet', 'CodeSystem']);
const CORE = 'http://hl7.org/fhir/StructureDefinition/';
export const X12_VALUE_SETS = 'https://valueset.x12.org/';

/**
 * Loads FHIR_PROFILES into the server's tables: `profiles` (url -> StructureDefinition, for
 * meta.profile), `valueSets` (url -> ValueSet) and `codeSystems` (url -> Set of codes, complete
 * ones only), the tables its required-binding check expands.
 */
export function installProfiles(spec, { profiles, valueSets, codeSystems }, log = () => {}) {
  const found = loadConformance(spec, log);
  indexStructureDefinitionBundle(found.structureDefinitions); // so that profiles can refer to each other
  found.structureDefinitions.forEach((sd) => profiles.set(sd.url, sd));
  found.valueSets.forEach((vs) => valueSets.set(vs.url, vs));
  for (const cs of found.codeSystems.filter((c) => c.content === 'complete')) {
    const codes = new Set();
    const walk = (concepts) => (concepts ?? []).forEach((c) => codes.add(c.code) && walk(c.concept));
    walk(cs.concept);
    codeSystems.set(cs.url, codes);
  }
}

/** @returns {{structureDefinitions: object[], valueSets: object[], codeSystems: object[]}} */
export function loadConformance(spec, log = () => {}) {
  const found = { structureDefinitions: [], valueSets: [], codeSystems: [] };
  for (const source of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const resources = readSource(source).filter((r) => CONFORMANCE.has(r?.resourceType) && r.url);
    const sds = resources.filter((r) => r.resourceType === 'StructureDefinition' && r.snapshot?.element?.length);
    let adapted = 0;
    for (const sd of sds) {
      adapted += adaptForValidator(sd);
    }
    found.structureDefinitions.push(...sds);
    found.valueSets.push(...resources.filter((r) => r.resourceType === 'ValueSet'));
    found.codeSystems.push(...resources.filter((r) => r.resourceType === 'CodeSystem'));
    log(
      `loaded ${sds.length} profile(s), ${resources.length - sds.length} value set(s) / code system(s) from ${source}` +
        (adapted ? ` (${adapted} slice definition(s) spelled out for the validator)` : '')
    );
  }
  return found;
}

function readSource(source) {
  if (statSync(source).isDirectory()) {
    const folder = statSync(join(source, 'package'), { throwIfNoEntry: false })?.isDirectory()
      ? join(source, 'package')
      : source;
    return readdirSync(folder)
      .filter((name) => name.endsWith('.json') && name !== 'package.json' && !name.startsWith('.'))
      .flatMap((name) => resourcesOf(JSON.parse(readFileSync(join(folder, name), 'utf8'))));
  }
  if (/\.(tgz|tar\.gz)$/.test(source)) {
    return tarFiles(gunzipSync(readFileSync(source)))
      .filter(({ name }) => /^package\/[^/]+\.json$/.test(name) && !name.endsWith('/package.json'))
      .flatMap(({ data }) => resourcesOf(JSON.parse(data.toString('utf8'))));
  }
  return resourcesOf(JSON.parse(readFileSync(source, 'utf8')));
}

function resourcesOf(json) {
  if (Array.isArray(json)) {
    return json;
  }
  return json?.resourceType === 'Bundle' ? (json.entry ?? []).map((e) => e.resource) : [json];
}

/** The regular files of a ustar archive (what npm packs): [{name, data}]. */
function tarFiles(buffer) {
  const files = [];
  let offset = 0;
  while (offset + 512 <= buffer.length) {
    const header = buffer.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) {
      break;
    }
    const text = (start, length) => header.subarray(start, start + length).toString('utf8').replace(/\0.*$/s, '');
    const size = Number.parseInt(text(124, 12).trim() || '0', 8);
    const prefix = text(345, 155);
    const name = (prefix ? `${prefix}/` : '') + text(0, 100);
    const kind = text(156, 1);
    if (kind === '0' || kind === '') {
      files.push({ name: name.replace(/^\.\//, ''), data: buffer.subarray(offset + 512, offset + 512 + size) });
    }
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** Adapts a snapshot as described at the top; returns how many slice definitions it changed. */
export function adaptForValidator(sd) {
  let changed = spellOutExtensionUrls(sd) + typeDiscriminatorsOnResources(sd);
  changed += dropSlices(sd, (e) => (e.id.match(/:[^.]+/g) ?? []).length > 1); // slices inside slices
  changed += dropInnerSlicing(sd);
  changed += dropSlices(sd, (e, all) => e.sliceName && decidedByX12Binding(e, all));
  for (const element of sd.snapshot.element) {
    for (const type of element.type ?? []) {
      for (const key of ['targetProfile', 'profile']) {
        if (type[key]) {
          type[key] = type[key].map((url) => (url.startsWith(CORE) ? url.replace(/\|4\.0\.1$/, '') : url));
        }
      }
    }
  }
  return changed;
}

function insertAfter(elements, afterId, element) {
  elements.splice(elements.findIndex((e) => e.id === afterId) + 1, 0, element);
}

function spellOutExtensionUrls(sd) {
  const elements = sd.snapshot.element;
  const ids = new Set(elements.map((e) => e.id));
  const slices = elements.filter(
    (e) =>
      e.sliceName &&
      e.type?.[0]?.code === 'Extension' &&
      e.type[0].profile?.[0] &&
      /(^|\.)(modifierExtension|extension):[^.]+$/.test(e.id) &&
      !ids.has(`${e.id}.url`)
  );
  for (const slice of slices) {
    const url = slice.type[0].profile[0].split('|')[0];
    insertAfter(elements, slice.id, {
      id: `${slice.id}.url`,
      path: `${slice.path}.url`,
      min: 1,
      max: '1',
      type: [{ code: 'uri' }],
      fixedUri: url,
    });
  }
  return slices.length;
}

function typeDiscriminatorsOnResources(sd) {
  const elements = sd.snapshot.element;
  const byId = new Map(elements.map((e) => [e.id, e]));
  let changed = 0;
  for (const element of elements.filter((e) => e.slicing)) {
    for (const discriminator of element.slicing.discriminator ?? []) {
      if (discriminator.type !== 'type' || discriminator.path === '$this') {
        continue;
      }
      const slices = elements.filter((e) => e.sliceName && e.path === element.path && e.id.startsWith(`${element.id}:`));
      const targets = slices.map((slice) => byId.get(`${slice.id}.${discriminator.path}`)?.type?.map((t) => t.code));
      if (!targets.length || !targets.every((codes) => codes?.length === 1 && isResourceType(codes[0]))) {
        continue;
      }
      slices.forEach((slice, i) => {
        insertAfter(elements, `${slice.id}.${discriminator.path}`, {
          id: `${slice.id}.${discriminator.path}.resourceType`,
          path: `${element.path}.${discriminator.path}.resourceType`,
          min: 1,
          max: '1',
          type: [{ code: 'string' }],
          fixedString: targets[i][0],
        });
      });
      discriminator.type = 'value';
      discriminator.path = `${discriminator.path}.resourceType`;
      changed += slices.length;
    }
  }
  return changed;
}

/** Removes each slice `drop(element, elements)` picks, with everything under it. */
function dropSlices(sd, drop) {
  const elements = sd.snapshot.element;
  const roots = elements.filter((e) => drop(e, elements)).map((e) => e.id);
  if (!roots.length) {
    return 0;
  }
  const under = (id) => roots.some((root) => id === root || id.startsWith(`${root}.`) || id.startsWith(`${root}:`));
  sd.snapshot.element = elements.filter((e) => !under(e.id));
  return roots.filter((id) => !roots.some((other) => other !== id && id.startsWith(other))).length;
}

/** A sliced element under another sliced element (`Claim.careTeam.extension` under the sliced
 * `Claim.careTeam`): Medplum's parser files its slices under the outer element, so they go. */
function dropInnerSlicing(sd) {
  const sliced = sd.snapshot.element.filter((e) => e.slicing && !e.id.includes(':')).map((e) => e.id);
  const inner = sliced.filter((id) => sliced.some((outer) => id.startsWith(`${outer}.`)));
  for (const element of sd.snapshot.element.filter((e) => inner.includes(e.id))) {
    delete element.slicing;
  }
  return dropSlices(sd, (e) => inner.some((id) => e.id.startsWith(`${id}:`) && e.sliceName));
}

/** A slice told apart from its siblings only by a required binding to an X12 value set: which
 * values belong to it cannot be decided offline (Medplum would count every value in it). */
function decidedByX12Binding(slice, elements) {
  const base = slice.id.slice(0, slice.id.lastIndexOf(':'));
  const sliced = elements.find((e) => e.id === base);
  const discriminators = sliced?.slicing?.discriminator ?? [];
  return (
    discriminators.length > 0 &&
    discriminators.every((d) => {
      const at = d.path === '$this' ? slice : elements.find((e) => e.id === `${slice.id}.${d.path}`);
      const fixed = at && Object.keys(at).some((k) => k.startsWith('fixed') || k.startsWith('pattern'));
      return (
        (d.type === 'value' || d.type === 'pattern') &&
        at &&
        !fixed &&
        at.binding?.strength === 'required' &&
        String(at.binding.valueSet).startsWith(X12_VALUE_SETS)
      );
    })
  );
}
