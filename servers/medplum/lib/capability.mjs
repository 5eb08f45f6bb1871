// Builds the CapabilityStatement served at GET [base]/metadata. It lists only
// what this wrapper really does; see README.md for what is left out.
import { SUPPORTED_SEARCH_PARAM_TYPES, loadDefinitions } from './definitions.mjs';

const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];

// Parameters that @medplum/core adds to every type for Medplum's own server.
const MEDPLUM_ONLY_PARAMS = new Set(['_compartment', '_project']);

const COMMON_SEARCH_PARAMS = [
  { name: '_count', type: 'number', documentation: 'Page size (default 20, at most 1000)' },
  { name: '_offset', type: 'number', documentation: 'Index of the first result; next links use it' },
  { name: '_sort', type: 'string', documentation: 'Sort by one or more search parameters (prefix - for descending)' },
];

/**
 * @param {object} info
 * @param {string} info.baseUrl - The server base URL, e.g. http://127.0.0.1:18103/fhir
 * @param {string} info.softwareVersion - Version of @medplum/fhir-router.
 * @returns {object} The CapabilityStatement.
 */
export function buildCapabilityStatement({ baseUrl, softwareVersion }) {
  const defs = loadDefinitions();
  const resource = defs.resourceTypes.map((type) => {
    const searchParam = [];
    for (const [code, param] of Object.entries(defs.searchParams(type))) {
      if (MEDPLUM_ONLY_PARAMS.has(code) || !SUPPORTED_SEARCH_PARAM_TYPES.has(param.type)) {
        continue;
      }
      searchParam.push({
        name: code,
        ...(param.url ? { definition: param.url } : undefined),
        type: param.type,
      });
    }
    searchParam.sort((a, b) => a.name.localeCompare(b.name));
    return {
      type,
      profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
      interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
      versioning: 'versioned',
      readHistory: true,
      updateCreate: true,
      conditionalCreate: true,
      conditionalRead: 'not-supported',
      conditionalUpdate: true,
      conditionalDelete: 'single',
      referencePolicy: ['literal', 'local'],
      searchParam: [...searchParam, ...COMMON_SEARCH_PARAMS],
    };
  });

  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    publisher: 'fhir_lupus test server',
    kind: 'instance',
    software: { name: 'Medplum fhir-router (in-memory) behind fhir_lupus node:http wrapper', version: softwareVersion },
    implementation: {
      description: 'In-memory Medplum FHIR R4 engine for tests; data is lost on exit',
      url: baseUrl,
    },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        documentation:
          'Every written resource is validated against the base R4 StructureDefinitions. ' +
          'Transactions are atomic. Searches page with _count/_offset and Bundle.link next.',
        security: { cors: false, description: 'No authentication (loopback test server)' },
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}
