// Paging for searches. MemoryRepository.search() applies _count/_offset and sets
// Bundle.total, but returns no Bundle.link and no page size by default (an
// unbounded search returns everything). The router's search handlers are
// wrapped here so that every search (direct, _search by POST, or inside a
// batch) gets a default page size and self/first/previous/next links that are
// absolute URLs on the wrapper's base.
import { OperationOutcomeError, badRequest, formatSearchQuery, parseSearchRequest } from '@medplum/core';

export const DEFAULT_COUNT = 20;
export const MAX_COUNT = 1000;

function pageUrl(baseUrl, searchRequest, offset) {
  const query = formatSearchQuery({ ...searchRequest, offset });
  return `${baseUrl}/${searchRequest.resourceType}${query}`;
}

/**
 * Wraps the router's type-level search routes (GET [type], POST [type]/_search)
 * and disables system-level search, which MemoryRepository cannot do.
 * @param {object} fhirRouter - A FhirRouter.
 * @param {string} baseUrl - The server base URL.
 */
export function installSearchPaging(fhirRouter, baseUrl) {
  for (const route of fhirRouter.router.routes) {
    const interaction = route.data?.interaction;
    if (interaction === 'search-system') {
      route.handler = async () => {
        throw new OperationOutcomeError(badRequest('System-level search is not supported; search one resource type'));
      };
      continue;
    }
    if (interaction !== 'search-type') {
      continue;
    }
    const original = route.handler;
    route.handler = async (req, repo, router, options) => {
      const viaPost = req.method === 'POST';
      const query = { ...((viaPost ? req.body : req.query) ?? {}) };
      const resourceType = req.params.resourceType;

      const requested = parseSearchRequest(resourceType, query);
      let count = requested.count ?? DEFAULT_COUNT;
      if (!Number.isFinite(count) || count < 0) {
        throw new OperationOutcomeError(badRequest('_count must be a non-negative integer', '_count'));
      }
      if (requested.offset !== undefined && (!Number.isFinite(requested.offset) || requested.offset < 0)) {
        throw new OperationOutcomeError(badRequest('_offset must be a non-negative integer', '_offset'));
      }
      count = Math.min(count, MAX_COUNT);
      query._count = String(count);

      const pagedReq = viaPost ? { ...req, body: query } : { ...req, query };
      const response = await original(pagedReq, repo, router, options);
      const bundle = response[1];
      if (bundle?.resourceType !== 'Bundle') {
        return response;
      }

      const searchRequest = parseSearchRequest(resourceType, query);
      const offset = searchRequest.offset ?? 0;
      const total = bundle.total ?? 0;
      const link = [
        { relation: 'self', url: pageUrl(baseUrl, searchRequest, offset) },
        { relation: 'first', url: pageUrl(baseUrl, searchRequest, 0) },
      ];
      if (offset > 0 && count > 0) {
        link.push({ relation: 'previous', url: pageUrl(baseUrl, searchRequest, Math.max(0, offset - count)) });
      }
      if (count > 0 && offset + count < total) {
        link.push({ relation: 'next', url: pageUrl(baseUrl, searchRequest, offset + count) });
      }
      if (count > 0 && total > 0) {
        link.push({ relation: 'last', url: pageUrl(baseUrl, searchRequest, Math.floor((total - 1) / count) * count) });
      }
      bundle.link = link;
      return response;
    };
  }
}
