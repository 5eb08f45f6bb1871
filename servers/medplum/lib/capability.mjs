// The CapabilityStatement served at GET [base]/metadata. It claims only what FhirRouter and
// MemoryRepository do here: the FhirRouter routes per type, PUT [type]/[new id] creating
// (MemoryRepository.updateResource stores any id), conditional create/update/delete (one match;
// several -> 412), and only search parameters @medplum/core's in-memory matcher evaluates
// (token, reference, string, uri, date with a FHIRPath expression).
import { getSearchParameters } from '@medplum/core';

const INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
const MATCHED_TYPES = new Set(['token', 'reference', 'string', 'uri', 'date']);

/**
 * @param {string[]} resourceTypes - The resource types.
 * @param {string} baseUrl - The server base URL.
 * @param {string} version - The @medplum/fhir-router version.
 * @returns {object} The CapabilityStatement.
 */
export function buildCapabilityStatement(resourceTypes, baseUrl, version) {
  const resource = resourceTypes.map((type) => ({
    type,
    profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
    interaction: INTERACTIONS.map((code) => ({ code })),
    versioning: 'versioned',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalRead: 'not-supported',
    conditionalUpdate: true,
    conditionalDelete: 'single',
    searchParam: Object.values(getSearchParameters(type) ?? {})
      .filter((p) => p.expression && MATCHED_TYPES.has(p.type))
      .map((p) => ({ name: p.code, definition: p.url, type: p.type }))
      .sort((a, b) => a.name.localeCompare(b.name)),
  }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'Medplum FhirRouter + MemoryRepository (fhir_lupus test server)', version },
    implementation: { description: 'In-memory Medplum FHIR engine for tests; data is lost on exit', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [{ mode: 'server', resource, interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
  };
}
