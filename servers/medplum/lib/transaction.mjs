// Checks a transaction Bundle before Medplum's batch processor runs it, so that a
// bad transaction fails as a whole with a precise OperationOutcome:
//
//  * every entry has request.method and request.url (the router would otherwise
//    answer such an entry with an error *inside* a successful transaction);
//  * every POST/PUT resource is valid (errors name the entry, e.g.
//    "Bundle.entry[1] (POST Observation): Observation.status: Missing required property");
//  * a conditional create / conditional update that matches more than one
//    resource fails the whole transaction with 412;
//  * no resource is the target of two entries (same conditional criteria twice,
//    two criteria matching the same resource, or the same Type/id twice);
//  * urn:uuid placeholders used inside *search criteria* (request.url of a
//    conditional update, ifNoneExist) are replaced by the id of an existing
//    resource when the entry they point to already matches one. The router only
//    rewrites such placeholders after it has evaluated the criteria, which would
//    break idempotency of re-posted transactions.
import { OperationOutcomeError, parseSearchRequest } from '@medplum/core';
import { addDiagnostics, checkSearchRequest, validateOrThrow } from './repository.mjs';

const URN_UUID = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function issue(code, text, expression, severity = 'error') {
  return { severity, code, details: { text }, diagnostics: text, expression: expression ? [expression] : undefined };
}

function outcomeOf(issues) {
  return addDiagnostics({ resourceType: 'OperationOutcome', issue: issues });
}

/** Searches with the criteria; returns at most 2 matches, or throws a 400 for bad criteria. */
async function findMatches(repo, criteria) {
  const search = parseSearchRequest(criteria);
  search.count = 2;
  search.offset = 0;
  search.sortRules = undefined;
  return repo.searchResources(search);
}

function replacePlaceholders(text, resolved) {
  if (!text || !text.includes('urn')) {
    return text;
  }
  let out = text;
  for (const [placeholder, reference] of resolved) {
    out = out.split(placeholder).join(reference).split(encodeURIComponent(placeholder)).join(reference);
  }
  return out;
}

/** Type?query with its parameters sorted and decoded, so equal criteria compare equal. */
function normalizeCriteria(criteria) {
  const [type, query = ''] = criteria.split('?');
  const params = [...new URLSearchParams(query)].map(([k, v]) => `${k}=${v}`).sort();
  return `${type}?${params.join('&')}`;
}

/**
 * Prepares and checks a transaction Bundle in place.
 * @param {object} bundle - The transaction Bundle (request.url / ifNoneExist may be rewritten).
 * @param {object} repo - The repository.
 * @returns {Promise<{status: number, outcome: object} | undefined>} A failure, or undefined if it may run.
 */
export async function prepareTransaction(bundle, repo) {
  const entries = Array.isArray(bundle.entry) ? bundle.entry : [];
  if (entries.length === 0) {
    return { status: 400, outcome: outcomeOf([issue('invalid', 'Transaction Bundle has no entries', 'Bundle.entry')]) };
  }

  const errors = [];
  const resolved = new Map(); // urn:uuid -> Type/id of an existing resource
  const identities = new Map(); // criteria or Type/id -> index of the first entry that targets it
  const claim = (key, i, where, label) => {
    if (identities.has(key)) {
      errors.push(
        issue(
          'duplicate',
          `${label}: targets the same resource as Bundle.entry[${identities.get(key)}] (${key}); ` +
            'a resource may appear only once in a transaction',
          `${where}.request`
        )
      );
      return false;
    }
    identities.set(key, i);
    return true;
  };

  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    const where = `Bundle.entry[${i}]`;
    const request = entry?.request;
    if (!request?.method || !request?.url) {
      errors.push(issue('required', 'Entry needs request.method and request.url', `${where}.request`));
      continue;
    }
    const method = String(request.method).toUpperCase();
    const label = `${where} (${method} ${request.url})`;

    // Resolve placeholders from earlier entries in search criteria.
    if (request.url.includes('?')) {
      request.url = replacePlaceholders(request.url, resolved);
    }
    if (request.ifNoneExist) {
      request.ifNoneExist = replacePlaceholders(request.ifNoneExist, resolved);
    }

    if (method === 'POST' || method === 'PUT') {
      const typeFromUrl = request.url.split('?')[0].split('/')[0];
      if (!entry.resource) {
        errors.push(issue('required', `${label}: entry has no resource`, `${where}.resource`));
        continue;
      }
      if (entry.resource.resourceType !== typeFromUrl && !request.url.startsWith('$')) {
        errors.push(
          issue(
            'invalid',
            `${label}: resourceType ${entry.resource.resourceType} does not match the request URL`,
            `${where}.resource.resourceType`
          )
        );
        continue;
      }
      try {
        validateOrThrow(entry.resource);
      } catch (err) {
        if (!(err instanceof OperationOutcomeError)) {
          throw err;
        }
        for (const found of err.outcome.issue ?? []) {
          if (found.severity !== 'error' && found.severity !== 'fatal') {
            continue;
          }
          const exprs = found.expression ?? [];
          errors.push({
            ...found,
            expression: [`${where}.resource`, ...exprs],
            diagnostics: `${label}: ${exprs.length ? exprs.join(', ') + ': ' : ''}${found.details?.text ?? found.code}`,
          });
        }
        continue;
      }
    }

    // Conditional create / update: check the criteria and how many resources they match.
    let criteria;
    if (method === 'POST' && request.ifNoneExist) {
      criteria = `${request.url.split('?')[0]}?${request.ifNoneExist}`;
    } else if ((method === 'PUT' || method === 'DELETE' || method === 'PATCH') && request.url.includes('?')) {
      criteria = request.url;
    }
    let matches = [];
    if (criteria && !criteria.includes('urn:uuid:') && !criteria.includes('urn%3Auuid%3A')) {
      try {
        checkSearchRequest(parseSearchRequest(criteria));
        matches = await findMatches(repo, criteria);
      } catch (err) {
        if (!(err instanceof OperationOutcomeError)) {
          throw err;
        }
        for (const found of err.outcome.issue ?? []) {
          errors.push({ ...found, expression: [`${where}.request`], diagnostics: `${label}: ${found.diagnostics ?? found.details?.text}` });
        }
        continue;
      }
      if (matches.length > 1 && method !== 'DELETE') {
        errors.push(
          issue('multiple-matches', `${label}: the condition matches more than one resource`, `${where}.request`)
        );
        continue;
      }
    }

    // One entry per resource: same criteria twice, or two entries hitting the same existing resource.
    if (method !== 'GET') {
      const keys = [];
      if (criteria) {
        keys.push('criteria ' + normalizeCriteria(criteria));
        if (matches.length === 1) {
          keys.push(`${matches[0].resourceType}/${matches[0].id}`);
        }
      } else if (/^[A-Za-z]+\/[^/?]+$/.test(request.url)) {
        keys.push(request.url);
      }
      if (!keys.every((key) => claim(key, i, where, label))) {
        continue;
      }
    }

    // Remember what this entry's placeholder will stand for when it is already known.
    const fullUrl = entry.fullUrl;
    if (typeof fullUrl === 'string' && URN_UUID.test(fullUrl)) {
      if (criteria && matches.length === 1) {
        resolved.set(fullUrl, `${matches[0].resourceType}/${matches[0].id}`);
      } else if (method === 'PUT' && /^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(request.url)) {
        resolved.set(fullUrl, request.url);
      }
    }
  }

  if (errors.length) {
    // 412 only when every problem is an over-broad condition.
    const allMultiple = errors.every((e) => e.code === 'multiple-matches');
    return { status: allMultiple ? 412 : 400, outcome: outcomeOf(errors) };
  }
  return undefined;
}
