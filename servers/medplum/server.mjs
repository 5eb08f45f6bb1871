#!/usr/bin/env node
// In-memory FHIR R4 test server: Medplum's FhirRouter + MemoryRepository behind a
// plain node:http server bound to 127.0.0.1 only.
//
//   node --experimental-websocket server.mjs [PORT]     (or MEDPLUM_PORT=..., default 18103)
//   MEDPLUM_LOG_REQUESTS=1 logs every request.
//
// Base URL: http://127.0.0.1:<port>/fhir
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { OperationOutcomeError, getStatus, isOk, normalizeOperationOutcome } from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import { buildCapabilityStatement } from './lib/capability.mjs';
import { loadDefinitions } from './lib/definitions.mjs';
import { loadTerminology } from './lib/terminology.mjs';
import { TransactionalMemoryRepository, addDiagnostics } from './lib/repository.mjs';
import { installSearchPaging } from './lib/search.mjs';
import { prepareTransaction } from './lib/transaction.mjs';

const startedAt = process.hrtime.bigint();
const HOST = '127.0.0.1';
const DEFAULT_PORT = 18103;
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

function parsePort(value) {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error(`medplum test server: invalid port ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return port;
}

const port = parsePort(process.argv[2] ?? process.env.MEDPLUM_PORT ?? DEFAULT_PORT);
const baseUrl = `http://${HOST}:${port}/fhir`;

function routerVersion() {
  try {
    const pkg = new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url);
    return JSON.parse(readFileSync(pkg, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

const definitions = loadDefinitions();
loadTerminology();
const capabilityStatement = buildCapabilityStatement({ baseUrl, softwareVersion: routerVersion() });
const repo = new TransactionalMemoryRepository();
const router = new FhirRouter();
installSearchPaging(router, baseUrl);

// All requests run one at a time: MemoryRepository has no isolation, and a
// transaction must not interleave with other writes.
let queueTail = Promise.resolve();
function serialized(task) {
  const run = queueTail.then(task, task);
  queueTail = run.catch(() => undefined);
  return run;
}

class HttpError extends Error {
  constructor(status, outcome) {
    super(outcome.issue?.[0]?.details?.text ?? 'error');
    this.status = status;
    this.outcome = outcome;
  }
}

function simpleOutcome(code, text) {
  return addDiagnostics({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, simpleOutcome('too-costly', `Request body larger than ${MAX_BODY_BYTES} bytes`)));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(text, contentType, isSearchPost) {
  if (!text.trim()) {
    return undefined;
  }
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (isSearchPost && type === 'application/x-www-form-urlencoded') {
    return Object.fromEntries(groupParams(new URLSearchParams(text)));
  }
  if (type && !type.includes('json')) {
    throw new HttpError(415, simpleOutcome('not-supported', `Unsupported content type ${type}; use application/fhir+json`));
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, simpleOutcome('structure', `Request body is not valid JSON: ${err.message}`));
  }
}

function groupParams(searchParams) {
  const grouped = new Map();
  for (const [key, value] of searchParams) {
    const existing = grouped.get(key);
    if (existing === undefined) {
      grouped.set(key, value);
    } else if (Array.isArray(existing)) {
      existing.push(value);
    } else {
      grouped.set(key, [existing, value]);
    }
  }
  return grouped;
}

/**
 * Runs a transaction Bundle all-or-nothing.
 *
 * Medplum's BatchProcessor refuses, in transaction mode, any transaction with more
 * than 50 updates, or more than 8 entries once it holds a conditional create or
 * update (limits for its Postgres server). So the bundle is run by the processor in
 * batch mode (same entry ordering and urn:uuid rewriting), inside a repository
 * transaction opened here: if any entry fails, every write is undone and the first
 * failing entry's outcome is returned. Validation happened in prepareTransaction(),
 * before anything was written.
 */
async function runTransaction(fhirReq) {
  const failure = await prepareTransaction(fhirReq.body, repo);
  if (failure) {
    return { status: failure.status, body: failure.outcome };
  }
  fhirReq.config = { ...fhirReq.config, transactions: false };
  // Every POST/PUT resource was validated by prepareTransaction(); PATCH results were not.
  const hasPatch = fhirReq.body.entry.some((e) => String(e?.request?.method).toUpperCase() === 'PATCH');
  repo.begin();
  repo.prevalidated = !hasPatch;
  let outcome;
  let bundle;
  try {
    [outcome, bundle] = await router.handleRequest(fhirReq, repo);
  } catch (err) {
    repo.rollback();
    throw err;
  } finally {
    repo.prevalidated = false;
  }
  if (!isOk(outcome) || bundle?.resourceType !== 'Bundle') {
    repo.rollback();
    return { status: getStatus(outcome), body: addDiagnostics(outcome) };
  }
  const failed = (bundle.entry ?? []).findIndex((e) => !String(e?.response?.status ?? '').startsWith('2'));
  if (failed >= 0) {
    repo.rollback();
    const entryOutcome = bundle.entry[failed]?.response?.outcome ?? simpleOutcome('processing', 'Entry failed');
    return {
      status: Number(bundle.entry[failed]?.response?.status) || 400,
      body: addDiagnostics(entryOutcome, `Bundle.entry[${failed}]`),
    };
  }
  repo.commit();
  return { status: 200, body: bundle };
}

async function dispatch(method, rel, query, body, headers) {
  const fhirReq = {
    method,
    url: rel + (query ? '?' + query : ''),
    pathname: '',
    params: {},
    query: {},
    body,
    headers,
    config: { transactions: true },
  };
  if (method === 'POST' && rel === '' && body?.resourceType === 'Bundle' && body.type === 'transaction') {
    return runTransaction(fhirReq);
  }
  const [outcome, resource] = await router.handleRequest(fhirReq, repo);
  const status = getStatus(outcome);
  if (!isOk(outcome)) {
    return { status, body: addDiagnostics(outcome, `${method} ${fhirReq.url || '[base]'}`) };
  }
  return { status, body: resource ?? outcome };
}

function addFullUrls(bundle) {
  for (const entry of bundle.entry ?? []) {
    const resource = entry?.resource;
    if (resource?.id && resource.resourceType && !entry.fullUrl) {
      entry.fullUrl = `${baseUrl}/${resource.resourceType}/${resource.id}`;
    }
    if (entry?.response && resource?.meta?.versionId && resource.resourceType !== 'OperationOutcome') {
      entry.response.etag ??= `W/"${resource.meta.versionId}"`;
      entry.response.lastModified ??= resource.meta.lastUpdated;
    }
    if (resource?.resourceType === 'Bundle') {
      addFullUrls(resource);
    }
  }
}

function send(res, status, body, method) {
  const headers = { 'Content-Type': FHIR_JSON };
  if (body?.resourceType === 'Bundle') {
    addFullUrls(body);
  } else if (body?.id && body.meta?.versionId && body.resourceType !== 'OperationOutcome') {
    headers.ETag = `W/"${body.meta.versionId}"`;
    if (body.meta.lastUpdated) {
      headers['Last-Modified'] = new Date(body.meta.lastUpdated).toUTCString();
    }
    if (status === 201) {
      headers.Location = `${baseUrl}/${body.resourceType}/${body.id}/_history/${body.meta.versionId}`;
    }
  }
  const text = JSON.stringify(body);
  headers['Content-Length'] = Buffer.byteLength(text);
  res.writeHead(status, headers);
  res.end(method === 'HEAD' ? undefined : text);
}

async function handle(req, res) {
  const method = req.method ?? 'GET';
  const url = new URL(req.url ?? '/', `http://${HOST}:${port}`);
  const path = url.pathname;
  if (path !== '/fhir' && !path.startsWith('/fhir/')) {
    throw new HttpError(404, simpleOutcome('not-found', `No route for ${path}; the FHIR base is ${baseUrl}`));
  }
  const rel = path.slice('/fhir'.length).replace(/^\/+|\/+$/g, '');
  if (rel === 'metadata') {
    if (method !== 'GET' && method !== 'HEAD') {
      throw new HttpError(405, simpleOutcome('not-supported', 'metadata only supports GET'));
    }
    return { status: 200, body: capabilityStatement };
  }
  const routeMethod = method === 'HEAD' ? 'GET' : method;
  if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(routeMethod)) {
    throw new HttpError(405, simpleOutcome('not-supported', `Method ${method} is not supported`));
  }

  const firstSegment = rel.split('/')[0];
  if (firstSegment && !firstSegment.startsWith('$') && !definitions.resourceTypeSet.has(firstSegment)) {
    throw new HttpError(404, simpleOutcome('not-found', `Unknown resource type: ${firstSegment}`));
  }

  const params = new URLSearchParams(url.search);
  params.delete('_format');
  params.delete('_pretty');
  const isSearchPost = routeMethod === 'POST' && rel.endsWith('/_search');

  let body;
  if (routeMethod === 'POST' || routeMethod === 'PUT' || routeMethod === 'PATCH') {
    body = parseBody(await readBody(req), req.headers['content-type'], isSearchPost);
    if (isSearchPost) {
      // Query string parameters count as search parameters too.
      body = { ...Object.fromEntries(groupParams(params)), ...(body ?? {}) };
    } else if (body === undefined) {
      throw new HttpError(400, simpleOutcome('required', `${method} needs a request body`));
    }
  } else {
    req.resume();
  }
  const query = isSearchPost ? '' : params.toString();
  return serialized(() => dispatch(routeMethod, rel, query, body, req.headers));
}

// MEDPLUM_LOG_REQUESTS=1 logs one line per request (method, path, status, milliseconds).
const logRequests = /^(1|true|yes)$/i.test(process.env.MEDPLUM_LOG_REQUESTS ?? '');

const server = http.createServer((req, res) => {
  if (logRequests) {
    const t0 = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      console.log(`${req.method} ${req.url} ${res.statusCode} ${ms.toFixed(1)} ms`);
    });
  }
  handle(req, res)
    .then(({ status, body }) => send(res, status, body, req.method))
    .catch((err) => {
      if (err instanceof HttpError) {
        send(res, err.status, err.outcome, req.method);
        return;
      }
      const outcome = err instanceof OperationOutcomeError ? err.outcome : normalizeOperationOutcome(err);
      const status = err instanceof OperationOutcomeError ? getStatus(outcome) : 500;
      if (status >= 500) {
        console.error('medplum test server: internal error', err);
      }
      send(res, status, addDiagnostics(outcome), req.method);
    });
});

server.on('error', (err) => {
  console.error(`medplum test server: cannot listen on ${HOST}:${port}: ${err.message}`);
  process.exit(1);
});

server.listen(port, HOST, () => {
  const ms = Number(process.hrtime.bigint() - startedAt) / 1e6;
  const rssMb = process.memoryUsage().rss / (1024 * 1024);
  console.log(
    `medplum test server listening on ${baseUrl} ` +
      `(${definitions.resourceTypes.length} resource types, startup ${ms.toFixed(0)} ms, rss ${rssMb.toFixed(0)} MiB)`
  );
});

// Nothing is persisted, so there is nothing to flush: stop at once.
function shutdown(signal) {
  console.log(`medplum test server: ${signal}, stopping`);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
