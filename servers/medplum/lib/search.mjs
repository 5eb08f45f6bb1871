// What Medplum's server does around a search (packages/server/src/fhir/search.ts) and
// MemoryRepository does not:
//  * checkSearchRequest(): an unknown resource type, an unknown search parameter or an unknown
//    _sort code is a 400 ("Unknown search parameter: x"), where the in-memory matcher would
//    silently match nothing (a misspelt conditional create would then insert a duplicate).
//    Chains (a.b=, _has:) and Medplum's special parameters are left to MemoryRepository.
//  * pageRequest() / pageLinks(): a default page size of 20 and at most 1000
//    (DEFAULT_SEARCH_COUNT / DEFAULT_MAX_SEARCH_COUNT), Bundle.link self, first, next, previous
//    as absolute URLs (offset paging), and entry.fullUrl.
import {
  DEFAULT_MAX_SEARCH_COUNT,
  DEFAULT_SEARCH_COUNT,
  OperationOutcomeError,
  badRequest,
  formatSearchQuery,
  getSearchParameter,
  validateResourceType,
} from '@medplum/core';

// Handled by Medplum's server without a SearchParameter (trySpecialSearchParameter, addOrderByClause).
const SPECIAL_FILTERS = new Set(['_id', '_lastUpdated', '_compartment', '_project', '_filter']);
const SPECIAL_SORTS = new Set(['_id', '_lastUpdated']);

/**
 * @param {object} searchRequest - A SearchRequest.
 * @throws {OperationOutcomeError} 400 for an unknown resource type, search parameter or sort code.
 */
export function checkSearchRequest(searchRequest) {
  const type = searchRequest.resourceType;
  if (searchRequest.types) {
    return; // several types (GET [base]?_type=...): MemoryRepository finds nothing
  }
  validateResourceType(type);
  for (const { code } of searchRequest.filters ?? []) {
    if (
      !code.includes('.') &&
      !code.startsWith('_has:') &&
      !SPECIAL_FILTERS.has(code) &&
      !getSearchParameter(type, code)
    ) {
      throw new OperationOutcomeError(badRequest(`Unknown search parameter: ${code}`));
    }
  }
  for (const { code } of searchRequest.sortRules ?? []) {
    if (!SPECIAL_SORTS.has(code) && !getSearchParameter(type, code)) {
      throw new OperationOutcomeError(badRequest(`Unknown search parameter: ${code}`));
    }
  }
}

/** The request with Medplum's default and maximum page size, and offset 0 when none is given. */
export function pageRequest(searchRequest) {
  return {
    ...searchRequest,
    count: Math.min(searchRequest.count ?? DEFAULT_SEARCH_COUNT, DEFAULT_MAX_SEARCH_COUNT),
    offset: searchRequest.offset ?? 0,
  };
}

/**
 * Adds entry.fullUrl and Bundle.link to a searchset.
 * @param {object} bundle - The searchset from MemoryRepository (Bundle.total is the number of matches).
 * @param {object} searchRequest - The request as given to pageRequest().
 * @param {string} baseUrl - e.g. http://127.0.0.1:18103/fhir
 */
export function addPaging(bundle, searchRequest, baseUrl) {
  bundle.entry = bundle.entry?.map((entry) => ({
    fullUrl: `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`,
    ...entry,
  }));
  const { count, offset } = searchRequest;
  const url = (at) => `${baseUrl}/${searchRequest.resourceType}${formatSearchQuery({ ...searchRequest, offset: at })}`;
  bundle.link = [{ relation: 'self', url: url(offset) }];
  if (count > 0 && bundle.entry?.length) {
    bundle.link.push({ relation: 'first', url: url(0) });
    if (offset + count < bundle.total) {
      bundle.link.push({ relation: 'next', url: url(offset + count) });
    }
    if (offset > 0) {
      bundle.link.push({ relation: 'previous', url: url(Math.max(0, offset - count)) });
    }
  }
}
