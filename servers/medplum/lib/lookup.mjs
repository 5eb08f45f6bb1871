// A look-up index that only narrows which stored resources MemoryRepository's search scan
// looks at. It never decides a match: @medplum/core's matcher still evaluates every filter on
// every candidate, and the candidates come in storage order, so a search returns exactly what
// the full scan returns, in the same order.
//
// MemoryRepository keeps resourceType -> Map(id -> resource) in `this.resources` and scans
// `map.values()` on every search. Here that map is a TypeStore. The first equality search on
// a token or reference parameter (identifier=, _id=, subject=, patient=, ...) builds an index
// for that parameter, kept up to date on every later set/delete (rollbacks included):
//   token:     lower-cased token value -> ids   (the matcher compares values case-insensitively,
//              "system|value" additionally requires the system: a superset)
//   reference: text after the last "/" -> ids   ("Patient/1" and "1" both need it to be "1")
// A search that has such a filter makes the store's values() return only the union of the ids
// for that filter's values (the smallest such set when there are several).
import {
  Operator,
  convertToSearchableReferences,
  convertToSearchableTokens,
  evalFhirPathTyped,
  getSearchParameter,
  splitSearchOnComma,
  toTypedValue,
} from '@medplum/core';

/** resourceType -> TypeStore; get() creates the store, so every write lands in an indexed map. */
export class ResourceStore extends Map {
  get(type) {
    let store = super.get(type);
    if (!store) {
      store = new TypeStore(type);
      super.set(type, store);
    }
    return store;
  }
}

function resourceKeys(param, resource) {
  const values = evalFhirPathTyped(param.expression, [toTypedValue(resource)]);
  if (param.type === 'token') {
    return convertToSearchableTokens(values).flatMap((t) =>
      typeof t.value === 'string' ? [t.value.toLowerCase()] : []
    );
  }
  return convertToSearchableReferences(values).map((ref) => ref.slice(ref.lastIndexOf('/') + 1));
}

/** The index key one filter value needs, null if it can match nothing, undefined if not indexable. */
function queryKey(param, value) {
  if (param.type === 'reference') {
    return value.slice(value.lastIndexOf('/') + 1);
  }
  if (!value.includes('|')) {
    return value.toLowerCase();
  }
  const [system, code] = value.split('|');
  if (!code) {
    return system ? undefined : null; // "system|" matches any code of the system
  }
  return code.toLowerCase();
}

class TypeStore extends Map {
  constructor(type) {
    super();
    this.type = type;
    this.indexes = new Map(); // search parameter code -> { param, ids: key -> Set(id), keys: id -> key[] }
    this.position = new Map(); // id -> insertion number (Map iteration order)
    this.nextPosition = 0;
    this.hint = undefined; // candidates for the scan running now
  }

  set(id, resource) {
    if (!super.has(id)) {
      this.position.set(id, this.nextPosition++);
    }
    for (const index of this.indexes.values()) {
      unindex(index, id);
      addToIndex(index, id, resource);
    }
    return super.set(id, resource);
  }

  delete(id) {
    for (const index of this.indexes.values()) {
      unindex(index, id);
    }
    this.position.delete(id);
    return super.delete(id);
  }

  values() {
    return this.hint ? this.hint.values() : super.values();
  }

  /**
   * The stored resources a search has to look at, in storage order, or undefined for all.
   * @param {object[]} filters - SearchRequest.filters.
   * @returns {object[] | undefined} Candidates.
   */
  candidates(filters) {
    let best;
    for (const filter of filters ?? []) {
      const ids = this.#lookup(filter);
      if (ids && (!best || ids.size < best.size)) {
        best = ids;
      }
    }
    if (!best) {
      return undefined;
    }
    const ids = [...best].sort((a, b) => this.position.get(a) - this.position.get(b));
    return ids.map((id) => super.get(id));
  }

  #lookup(filter) {
    if (filter.operator !== Operator.EQUALS || !filter.value || filter.code.includes('.')) {
      return undefined;
    }
    const param = getSearchParameter(this.type, filter.code);
    if (!param?.expression || (param.type !== 'token' && param.type !== 'reference')) {
      return undefined;
    }
    const keys = splitSearchOnComma(filter.value).map((value) => queryKey(param, value));
    if (keys.includes(undefined)) {
      return undefined;
    }
    let index = this.indexes.get(param.code);
    if (!index) {
      index = { param, ids: new Map(), keys: new Map() };
      for (const [id, resource] of super.entries()) {
        addToIndex(index, id, resource);
      }
      this.indexes.set(param.code, index);
    }
    const result = new Set();
    for (const key of keys) {
      for (const id of index.ids.get(key) ?? []) {
        result.add(id);
      }
    }
    return result;
  }
}

function addToIndex(index, id, resource) {
  const keys = [...new Set(resourceKeys(index.param, resource))];
  index.keys.set(id, keys);
  for (const key of keys) {
    let ids = index.ids.get(key);
    if (!ids) {
      ids = new Set();
      index.ids.set(key, ids);
    }
    ids.add(id);
  }
}

function unindex(index, id) {
  for (const key of index.keys.get(id) ?? []) {
    const ids = index.ids.get(key);
    ids.delete(id);
    if (!ids.size) {
      index.ids.delete(key);
    }
  }
  index.keys.delete(id);
}
