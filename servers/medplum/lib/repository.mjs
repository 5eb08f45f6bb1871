// An in-memory FHIR repository built on Medplum's MemoryRepository that adds
// what the stock class leaves out and a test server needs:
//
//  * validation: every resource written (create, update, patch result,
//    conditional create/update, batch and transaction entries) goes through
//    validateResource() from @medplum/core first, plus a check of the values
//    under required bindings (lib/terminology.mjs); an invalid resource is
//    rejected with a 400 OperationOutcome and nothing is stored;
//  * transactions with rollback: MemoryRepository.withTransaction() simply runs
//    its callback. Here every write made while a transaction is open is
//    journaled (previous current version + previous history of the touched
//    resource) and undone in reverse order when the transaction fails;
//  * strict search parameters: the core matcher silently matches nothing for an
//    unknown parameter (or an unsupported parameter type), which would make a
//    misspelt conditional create insert a duplicate every time. Such searches
//    are rejected with a 400 instead;
//  * a search that scales: MemoryRepository evaluates every filter's FHIRPath on
//    every stored resource of the type, so the conditional updates of a large
//    transaction cost O(n^2). Resources are kept in per-type stores that index
//    identifiers and top-level references; `identifier=system|value[,...]`,
//    `_id=` and simple reference searches (subject=, patient=, study=...) look
//    only at the indexed candidates (the core matcher checks the rest). `uri`
//    parameters (e.g. CodeSystem?url=) match exactly instead of by substring;
//  * readHistory() that does not reverse the stored version list in place.
import {
  Operator,
  OperationOutcomeError,
  allOk,
  badRequest,
  created,
  deepClone,
  evalFhirPath,
  globalSchema,
  matchesSearchRequest,
  multipleMatches,
  validateResource,
} from '@medplum/core';
import { MemoryRepository, getExtraEntries } from '@medplum/fhir-router';
import { SUPPORTED_SEARCH_PARAM_TYPES, loadDefinitions } from './definitions.mjs';
import { checkRequiredBindings } from './terminology.mjs';

/**
 * Adds a human readable `diagnostics` string to every issue that lacks one, built from
 * the issue's expression and details, so clients that only print diagnostics see the cause.
 * @param {object} outcome - An OperationOutcome (not modified).
 * @param {string} [prefix] - Optional context prepended to each diagnostics string.
 * @returns {object} A copy of the outcome with diagnostics.
 */
export function addDiagnostics(outcome, prefix) {
  // Outcomes from @medplum/core are often shared constants (notFound, allOk...): never mutate them.
  outcome = structuredClone(outcome);
  for (const issue of outcome?.issue ?? []) {
    if (!issue.diagnostics) {
      const where = issue.expression?.length ? issue.expression.join(', ') + ': ' : '';
      const text = issue.details?.text ?? issue.code ?? 'error';
      issue.diagnostics = (prefix ? prefix + ': ' : '') + where + text;
    } else if (prefix) {
      issue.diagnostics = prefix + ': ' + issue.diagnostics;
    }
  }
  return outcome;
}

/**
 * Validates a resource against the base R4 StructureDefinitions.
 * @param {object} resource - The resource.
 * @returns {object[]} The non-error issues (warnings), if any.
 * @throws {OperationOutcomeError} 400 with all issues when there is at least one error.
 */
export function validateOrThrow(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    throw new OperationOutcomeError(badRequest('Request body is not a FHIR resource'));
  }
  if (typeof resource.resourceType !== 'string' || !loadDefinitions().resourceTypeSet.has(resource.resourceType)) {
    throw new OperationOutcomeError(
      addDiagnostics(badRequest(`Unknown or missing resourceType: ${JSON.stringify(resource.resourceType ?? null)}`))
    );
  }
  const tokens = {};
  let issues;
  try {
    issues = validateResource(resource, { collect: { tokens } });
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) {
      throw err;
    }
    issues = err.outcome.issue ?? [];
  }
  issues = [...issues, ...checkRequiredBindings(tokens)];
  const isError = (issue) => issue.severity === 'error' || issue.severity === 'fatal';
  if (issues.some(isError)) {
    // Errors first, then warnings: the first issue is what most clients show.
    const sorted = [...issues.filter(isError), ...issues.filter((issue) => !isError(issue))];
    throw new OperationOutcomeError(addDiagnostics({ resourceType: 'OperationOutcome', issue: sorted }));
  }
  return issues;
}

/**
 * Checks that every filter of a search request is a search parameter the in-memory
 * matcher can evaluate for that resource type.
 * @param {object} searchRequest - A SearchRequest from parseSearchRequest().
 * @throws {OperationOutcomeError} 400 naming the offending parameter.
 */
export function checkSearchRequest(searchRequest) {
  const defs = loadDefinitions();
  const type = searchRequest.resourceType;
  if (!defs.resourceTypeSet.has(type)) {
    throw new OperationOutcomeError(addDiagnostics(badRequest(`Unknown resource type: ${type}`)));
  }
  for (const rule of searchRequest.sortRules ?? []) {
    if (!defs.searchParams(type)[rule.code]) {
      throw new OperationOutcomeError(
        addDiagnostics(badRequest(`Unknown _sort parameter "${rule.code}" for resource type ${type}`, '_sort'))
      );
    }
  }
  for (const filter of searchRequest.filters ?? []) {
    const code = filter.code;
    if (code.startsWith('_has')) {
      throw new OperationOutcomeError(addDiagnostics(badRequest(`Reverse chaining (_has) is not supported`, code)));
    }
    // Chained parameters (subject:Patient.identifier) are checked on their first link only.
    const first = code.split('.')[0].split(':')[0];
    const param = defs.searchParams(type)[first];
    if (!param) {
      throw new OperationOutcomeError(
        addDiagnostics(badRequest(`Unknown search parameter "${first}" for resource type ${type}`, first))
      );
    }
    if (!SUPPORTED_SEARCH_PARAM_TYPES.has(param.type)) {
      throw new OperationOutcomeError(
        addDiagnostics(
          badRequest(`Search parameter "${first}" of type ${param.type} is not supported by this server`, first)
        )
      );
    }
  }
}

/** Splits a search value on commas that are not escaped with a backslash. */
function splitOnComma(value) {
  const parts = [];
  let current = '';
  let escaped = false;
  for (const ch of value) {
    if (escaped) {
      current += ch;
      escaped = false;
    } else if (ch === '\\') {
      escaped = true;
    } else if (ch === ',') {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}

const identifierFieldsCache = new Map();

/**
 * The top-level fields that the `identifier` search parameter reads for a type
 * (e.g. ['identifier'] or ['identifier', 'masterIdentifier']), or null when its
 * expression is more complex than plain field access.
 */
function identifierFields(type) {
  if (identifierFieldsCache.has(type)) {
    return identifierFieldsCache.get(type);
  }
  let fields = null;
  const expression = globalSchema.types[type]?.searchParams?.identifier?.expression;
  if (expression) {
    const parts = expression
      .split('|')
      .map((part) => part.trim())
      .filter((part) => part.startsWith(type + '.'));
    const simple = parts.map((part) => /^[A-Za-z]+\.([A-Za-z]+)$/.exec(part)?.[1]);
    fields = parts.length && simple.every(Boolean) ? simple : null;
  }
  identifierFieldsCache.set(type, fields);
  return fields;
}

function identifierKeys(resource, fields) {
  const keys = [];
  for (const field of fields) {
    const value = resource[field];
    for (const identifier of Array.isArray(value) ? value : value ? [value] : []) {
      if (identifier?.system && identifier.value) {
        keys.push(identifier.system.toLowerCase() + '|' + identifier.value.toLowerCase());
      }
    }
  }
  return keys;
}

/** Top-level reference keys of a resource: "field\0Type/id" for each literal relative reference. */
function referenceKeys(resource) {
  const keys = [];
  for (const [field, value] of Object.entries(resource)) {
    if (!value || typeof value !== 'object') {
      continue;
    }
    for (const item of Array.isArray(value) ? value : [value]) {
      const reference = item?.reference;
      if (typeof reference === 'string' && RELATIVE_REFERENCE.test(reference)) {
        keys.push(field + '\0' + reference);
      }
    }
  }
  return keys;
}

const RELATIVE_REFERENCE = /^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;

function addToIndex(index, key, id) {
  let ids = index.get(key);
  if (!ids) {
    ids = new Set();
    index.set(key, ids);
  }
  ids.add(id);
}

function removeFromIndex(index, key, id) {
  const ids = index.get(key);
  if (ids) {
    ids.delete(id);
    if (ids.size === 0) {
      index.delete(key);
    }
  }
}

/**
 * id -> current resource for one resource type, with two indexes kept up to date
 * on every set/delete (including rollbacks): identifiers ("system|value", lower
 * case) and top-level literal references ("field\0Type/id").
 */
class TypeStore extends Map {
  constructor(type) {
    super();
    this.type = type;
    this.fields = identifierFields(type);
    this.byIdentifier = new Map();
    this.byReference = new Map();
  }

  #index(id, resource, add) {
    if (!resource) {
      return;
    }
    const update = add ? addToIndex : removeFromIndex;
    if (this.fields) {
      for (const key of identifierKeys(resource, this.fields)) {
        update(this.byIdentifier, key, id);
      }
    }
    for (const key of referenceKeys(resource)) {
      update(this.byReference, key, id);
    }
  }

  set(id, resource) {
    this.#index(id, super.get(id), false);
    super.set(id, resource);
    this.#index(id, resource, true);
    return this;
  }

  delete(id) {
    this.#index(id, super.get(id), false);
    return super.delete(id);
  }

  clear() {
    this.byIdentifier.clear();
    this.byReference.clear();
    super.clear();
  }
}

const referenceFieldsCache = new Map();

/**
 * The top-level fields a reference search parameter reads for a type, when its
 * (narrowed) expression is only "Type.field" or "Type.field.where(resolve() is X)"
 * parts; otherwise null.
 */
function referenceFields(type, code) {
  const cacheKey = type + '\0' + code;
  if (referenceFieldsCache.has(cacheKey)) {
    return referenceFieldsCache.get(cacheKey);
  }
  let fields = null;
  const param = globalSchema.types[type]?.searchParams?.[code];
  if (param?.type === 'reference' && param.expression) {
    const parts = param.expression.split('|').map((part) => part.trim());
    const pattern = new RegExp(`^${type}\\.([A-Za-z]+)(\\.where\\(\\(?resolve\\(\\) is [A-Za-z]+\\)?\\))?$`);
    const found = parts.map((part) => pattern.exec(part)?.[1]);
    fields = found.length && found.every(Boolean) ? found : null;
  }
  referenceFieldsCache.set(cacheKey, fields);
  return fields;
}

/** resourceType -> TypeStore; get() creates the store so every write lands in an indexed map. */
class ResourceStore extends Map {
  get(type) {
    let store = super.get(type);
    if (!store) {
      store = new TypeStore(type);
      super.set(type, store);
    }
    return store;
  }
}

/**
 * A filter that the store can answer without FHIRPath: `_id=a,b` or
 * `identifier=system|value,system|value` (every item with both parts). Returns
 * the candidate ids and an exact test, or undefined.
 */
function fastFilter(store, filter) {
  if (filter.operator !== Operator.EQUALS || !filter.value) {
    return undefined;
  }
  const items = splitOnComma(filter.value);
  if (filter.code === '_id') {
    const wanted = new Set(items);
    return {
      ids: () => items.filter((id) => store.has(id)),
      test: (resource) => wanted.has(resource.id),
    };
  }
  if (filter.code === 'identifier' && store.fields) {
    const keys = [];
    for (const item of items) {
      const parts = item.split('|');
      if (parts.length !== 2 || !parts[0] || !parts[1] || item.includes('\\')) {
        return undefined;
      }
      // Same semantics as the core token matcher: system and value compared case-insensitively.
      keys.push(parts[0].toLowerCase() + '|' + parts[1].toLowerCase());
    }
    const wanted = new Set(keys);
    return {
      ids: () => {
        const ids = new Set();
        for (const key of wanted) {
          for (const id of store.byIdentifier.get(key) ?? []) {
            ids.add(id);
          }
        }
        return [...ids];
      },
      test: (resource) => identifierKeys(resource, store.fields).some((key) => wanted.has(key)),
    };
  }
  const fields = referenceFields(store.type, filter.code);
  if (fields) {
    const param = globalSchema.types[store.type].searchParams[filter.code];
    const references = [];
    for (const item of items) {
      if (RELATIVE_REFERENCE.test(item)) {
        references.push(item);
      } else if (/^[A-Za-z0-9\-.]{1,64}$/.test(item) && param.target?.length === 1) {
        references.push(`${param.target[0]}/${item}`);
      } else {
        return undefined;
      }
    }
    return {
      inexact: true, // a superset: the core matcher still evaluates this filter
      ids: () => {
        const ids = new Set();
        for (const field of fields) {
          for (const reference of references) {
            for (const id of store.byReference.get(field + '\0' + reference) ?? []) {
              ids.add(id);
            }
          }
        }
        return [...ids];
      },
      test: () => true,
    };
  }
  return undefined;
}

/**
 * Splits the filters into those answered by the store's index and the rest, and
 * returns the stored resources that satisfy the indexed ones, in storage order.
 */
function selectCandidates(store, filters) {
  const fast = [];
  const rest = [];
  for (const filter of filters) {
    const f = fastFilter(store, filter);
    if (f) {
      fast.push(f);
    }
    if (!f || f.inexact) {
      rest.push(filter);
    }
  }
  if (!fast.length) {
    return { resources: [...store.values()], rest };
  }
  let best;
  for (const f of fast) {
    const ids = f.ids();
    if (!best || ids.length < best.length) {
      best = ids;
    }
  }
  let resources;
  if (best.length > 1) {
    // Keep storage order, as a full scan would.
    const wanted = new Set(best);
    resources = [...store.entries()].filter(([id]) => wanted.has(id)).map(([, resource]) => resource);
  } else {
    resources = best.map((id) => store.get(id)).filter(Boolean);
  }
  return { resources: resources.filter((resource) => fast.every((f) => f.test(resource))), rest };
}

/** `uri` parameters must match exactly; the core matcher only checks for a substring. */
function matchesUrisExactly(resource, type, filters) {
  for (const filter of filters) {
    const param = globalSchema.types[type]?.searchParams?.[filter.code];
    if (param?.type !== 'uri' || filter.operator !== Operator.EQUALS) {
      continue;
    }
    const values = evalFhirPath(param.expression, resource).filter((v) => typeof v === 'string');
    const wanted = splitOnComma(filter.value);
    if (!values.some((v) => wanted.includes(v))) {
      return false;
    }
  }
  return true;
}

function sortKey(resource, type, code) {
  const expression = globalSchema.types[type]?.searchParams?.[code]?.expression;
  if (!expression) {
    return undefined;
  }
  const value = evalFhirPath(expression, resource)[0];
  if (value === undefined || value === null) {
    return undefined;
  }
  if (typeof value === 'object') {
    return value.start ?? value.value ?? value.code ?? value.reference ?? value.family ?? JSON.stringify(value);
  }
  return value;
}

function compareKeys(a, b) {
  if (a === undefined || b === undefined) {
    return a === b ? 0 : a === undefined ? 1 : -1; // missing values last
  }
  if (typeof a === 'number' && typeof b === 'number') {
    return a - b;
  }
  return String(a).localeCompare(String(b));
}

export class TransactionalMemoryRepository extends MemoryRepository {
  /** Undo journal of the open transaction, or undefined when none is open. */
  #journal = undefined;

  /**
   * True while the server runs a transaction whose resources it has already
   * validated (lib/transaction.mjs), so they are not validated a second time.
   */
  prevalidated = false;

  constructor() {
    super();
    this.resources = new ResourceStore();
  }

  /** @returns {boolean} True while a transaction is open. */
  get inTransaction() {
    return this.#journal !== undefined;
  }

  /** Opens a transaction; writes are journaled until commit() or rollback(). */
  begin() {
    if (this.#journal) {
      throw new Error('A transaction is already open');
    }
    this.#journal = [];
  }

  /** Keeps every write made since begin(). */
  commit() {
    this.#journal = undefined;
  }

  /** Undoes every write made since begin(), newest first. */
  rollback() {
    const journal = this.#journal ?? [];
    this.#journal = undefined;
    for (let i = journal.length - 1; i >= 0; i--) {
      const { type, id, current, versions } = journal[i];
      restoreSlot(this.resources, type, id, current);
      restoreSlot(this.history, type, id, versions);
    }
  }

  /**
   * Runs the callback inside a transaction. A nested call joins the transaction that is
   * already open (the outermost caller decides commit or rollback).
   */
  async withTransaction(callback) {
    if (this.#journal) {
      return callback(this);
    }
    this.begin();
    try {
      const result = await callback(this);
      this.commit();
      return result;
    } catch (err) {
      this.rollback();
      throw err;
    }
  }

  /** Records the state of one resource slot before it is written. */
  #remember(type, id) {
    if (!this.#journal) {
      return;
    }
    const versions = this.history.get(type)?.get(id);
    this.#journal.push({
      type,
      id,
      current: this.resources.get(type)?.get(id),
      versions: versions ? versions.slice() : undefined,
    });
  }

  async createResource(resource, options, update = false) {
    if (!this.prevalidated) {
      validateOrThrow(resource);
    }
    const toStore = resource.id ? resource : { ...resource, id: this.generateId() };
    this.#remember(toStore.resourceType, toStore.id);
    return super.createResource(toStore, options, update);
  }

  async conditionalCreate(resource, search, options) {
    if (!this.prevalidated) {
      validateOrThrow(resource);
    }
    if (search.resourceType !== resource.resourceType) {
      throw new OperationOutcomeError(badRequest('Search type must match resource type for conditional create'));
    }
    const matches = await this.searchResources({ ...search, count: 2, offset: 0, sortRules: undefined });
    if (matches.length > 1) {
      throw new OperationOutcomeError(addDiagnostics(deepClone(multipleMatches)));
    }
    if (matches.length === 1) {
      const existing = matches[0];
      if (!options?.assignedId && resource.id && resource.id !== existing.id) {
        throw new OperationOutcomeError(
          badRequest('Resource ID did not match resolved ID', resource.resourceType + '.id')
        );
      }
      return { resource: existing, outcome: allOk };
    }
    return { resource: await this.createResource(resource, options), outcome: created };
  }

  async deleteResource(resourceType, id, options) {
    this.#remember(resourceType, id);
    return super.deleteResource(resourceType, id, options);
  }

  async expungeResources(resourceType, ids) {
    for (const id of ids) {
      this.#remember(resourceType, id);
    }
    return super.expungeResources(resourceType, ids);
  }

  async search(searchRequest) {
    checkSearchRequest(searchRequest);
    const type = searchRequest.resourceType;
    const filters = searchRequest.filters ?? [];
    if (filters.some((filter) => filter.code.includes('.'))) {
      // Chained search: leave it to MemoryRepository.
      return super.search(searchRequest);
    }
    const { resources, rest } = selectCandidates(this.resources.get(type), filters);
    const restRequest = { ...searchRequest, filters: rest };
    let matched = [];
    for (const resource of resources) {
      if ((!rest.length || matchesSearchRequest(resource, restRequest)) && matchesUrisExactly(resource, type, rest)) {
        matched.push(resource);
      }
    }
    const sortRules = searchRequest.sortRules ?? [];
    if (sortRules.length) {
      const keyed = matched.map((resource) => ({
        resource,
        keys: sortRules.map((rule) => sortKey(resource, type, rule.code)),
      }));
      keyed.sort((a, b) => {
        for (let i = 0; i < sortRules.length; i++) {
          const order = compareKeys(a.keys[i], b.keys[i]);
          if (order !== 0) {
            return sortRules[i].descending ? -order : order;
          }
        }
        return 0;
      });
      matched = keyed.map((k) => k.resource);
    }
    const offset = searchRequest.offset ?? 0;
    const page =
      searchRequest.count === undefined ? matched.slice(offset) : matched.slice(offset, offset + searchRequest.count);
    const entry = page.map((resource) => ({ search: { mode: 'match' }, resource: deepClone(resource) }));
    if ((searchRequest.include || searchRequest.revInclude) && entry.length) {
      await getExtraEntries(
        this,
        searchRequest,
        entry.map((e) => e.resource),
        entry
      );
    }
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      total: matched.length,
      ...(entry.length ? { entry } : undefined),
    };
  }

  async readHistory(resourceType, id, options) {
    await this.readResource(resourceType, id);
    const versions = (this.history.get(resourceType)?.get(id) ?? []).slice().reverse();
    const offset = options?.offset ?? 0;
    const page = versions.slice(offset, options?.limit !== undefined ? offset + options.limit : undefined);
    return {
      resourceType: 'Bundle',
      type: 'history',
      total: versions.length,
      ...(page.length ? { entry: page.map((version) => ({ resource: deepClone(version) })) } : undefined),
    };
  }
}

function restoreSlot(maps, type, id, value) {
  let byId = maps.get(type);
  if (value === undefined) {
    byId?.delete(id);
    return;
  }
  if (!byId) {
    byId = new Map();
    maps.set(type, byId);
  }
  byId.set(id, value);
}
