// The repository FhirRouter runs on: Medplum's MemoryRepository plus only what Medplum's real
// server has and MemoryRepository lacks (README.md says why each is allowed):
//  * validation: every resource written goes through validateResource() from @medplum/core
//    (and, when enabled, the required-binding check of lib/terminology.mjs). All writes of
//    MemoryRepository - create, update, patch, conditional create/update, batch and
//    transaction entries - end in createResourceSync(), which is where this hooks in;
//  * rollback: MemoryRepository.withTransaction() only runs its callback. Here every write
//    made inside it is journaled and undone, newest first, when the callback throws; nested
//    calls join the outer one;
//  * search: unknown parameters 400, page size, links, fullUrl (lib/search.mjs), and a
//    look-up index that only narrows the scan (lib/lookup.mjs);
//  * history newest first, as MemoryRepository returns it, but without reversing the stored
//    version list in place (MemoryRepository.readHistory does, which scrambles later reads).
import { OperationOutcomeError, deepClone, validateResource } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import { ResourceStore } from './lookup.mjs';
import { addPaging, checkSearchRequest, pageRequest } from './search.mjs';
import { checkRequiredBindings } from './terminology.mjs';

export class ServerRepository extends MemoryRepository {
  #journal = undefined; // undo records of the open transaction

  /**
   * @param {object} options
   * @param {string} options.baseUrl - Base of fullUrl and paging links.
   * @param {boolean} options.validateTerminology - Check values under required bindings.
   */
  constructor({ baseUrl, validateTerminology }) {
    super();
    this.resources = new ResourceStore();
    this.baseUrl = baseUrl;
    this.validateTerminology = validateTerminology;
  }

  #validate(resource) {
    const tokens = this.validateTerminology ? Object.create(null) : undefined;
    const issues = validateResource(resource, tokens && { collect: { tokens } }); // throws on errors
    const errors = tokens ? checkRequiredBindings(tokens) : [];
    if (errors.length) {
      throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: [...issues, ...errors] });
    }
  }

  /** The state of one resource before a write: its current version and its version list. */
  #before(type, id) {
    const versions = this.history.get(type)?.get(id);
    return { type, id, current: this.resources.get(type).get(id), versions, length: versions?.length ?? 0 };
  }

  #undo({ type, id, current, versions, length }) {
    if (current === undefined) {
      this.resources.get(type).delete(id);
    } else {
      this.resources.get(type).set(id, current);
    }
    if (!this.history.has(type)) {
      this.history.set(type, new Map());
    }
    if (versions) {
      versions.length = length;
      this.history.get(type).set(id, versions);
    } else {
      this.history.get(type).delete(id);
    }
  }

  createResourceSync(resource, options, update) {
    this.#validate(resource);
    const before = resource.id === undefined ? undefined : this.#before(resource.resourceType, resource.id);
    const result = super.createResourceSync(resource, options, update);
    this.#journal?.push(before ?? { type: result.resourceType, id: result.id, current: undefined, length: 0 });
    return result;
  }

  async deleteResource(type, id, options) {
    const before = this.#before(type, id);
    await super.deleteResource(type, id, options);
    this.#journal?.push(before);
  }

  async expungeResources(type, ids) {
    const before = ids.map((id) => this.#before(type, id));
    await super.expungeResources(type, ids);
    this.#journal?.push(...before);
  }

  async withTransaction(callback) {
    if (this.#journal) {
      return callback(this);
    }
    const journal = (this.#journal = []);
    try {
      return await callback(this);
    } catch (err) {
      journal.reverse().forEach((record) => this.#undo(record));
      throw err;
    } finally {
      this.#journal = undefined;
    }
  }

  searchSync(searchRequest) {
    checkSearchRequest(searchRequest);
    const store = this.resources.get(searchRequest.resourceType);
    store.hint = store.candidates(searchRequest.filters);
    try {
      return super.searchSync(searchRequest);
    } finally {
      store.hint = undefined;
    }
  }

  async search(searchRequest) {
    const request = pageRequest(searchRequest);
    const bundle = await super.search(request);
    addPaging(bundle, request, this.baseUrl);
    return bundle;
  }

  async readHistory(type, id) {
    await this.readResource(type, id);
    const entry = (this.history.get(type)?.get(id) ?? [])
      .toReversed()
      .map((version) => ({ resource: deepClone(version) }));
    return { resourceType: 'Bundle', type: 'history', ...(entry.length ? { entry } : undefined) };
  }
}
