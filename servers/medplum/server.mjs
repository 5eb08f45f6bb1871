#!/usr/bin/env node
// In-memory FHIR R4 test server: Medplum's FhirRouter (with Medplum's own batch and transaction
// processing, limits, conditional writes and 412s) on a MemoryRepository, behind node:http,
// bound to 127.0.0.1 only. Every request is handed to router.handleRequest() the way Medplum's
// server does it (packages/server/src/fhir/routes.ts); README.md lists what lib/ adds.
//
//   node --experimental-websocket server.mjs [PORT]      (or MEDPLUM_PORT=..., default 18103)
//   MEDPLUM_LOG_REQUESTS=1 logs every request; MEDPLUM_VALIDATE_TERMINOLOGY=0 turns off the
//   required-binding check.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import {
  OperationOutcomeError,
  badRequest,
  getStatus,
  isCreated,
  isOk,
  normalizeOperationOutcome,
  notFound,
} from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import { buildCapabilityStatement } from './lib/capability.mjs';
import { loadDefinitions } from './lib/definitions.mjs';
import { ServerRepository } from './lib/repository.mjs';

const startedAt = process.hrtime.bigint();
const HOST = '127.0.0.1';
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const JSON_TYPES = /^application\/(fhir\+json|json|json-patch\+json)$/;

const port = Number(process.argv[2] ?? process.env.MEDPLUM_PORT ?? 18103);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`medplum test server: invalid port ${JSON.stringify(process.argv[2] ?? process.env.MEDPLUM_PORT)}`);
  process.exit(2);
}
const baseUrl = `http://${HOST}:${port}/fhir`;
const version = JSON.parse(
  readFileSync(new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url))
).version;

const resourceTypes = loadDefinitions();
const capabilityStatement = buildCapabilityStatement(resourceTypes, baseUrl, version);
const repo = new ServerRepository({
  baseUrl,
  validateTerminology: !/^(0|false|no)$/i.test(process.env.MEDPLUM_VALIDATE_TERMINOLOGY ?? ''),
});
const router = new FhirRouter();

// One request at a time: MemoryRepository has no isolation, so nothing may run between the
// reads and writes of a transaction (Medplum's server gets that from Postgres).
let queue = Promise.resolve();
function serialized(task) {
  const run = queue.then(task);
  queue = run.catch(() => undefined);
  return run;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new OperationOutcomeError(badRequest(`Request body larger than ${MAX_BODY_BYTES} bytes`)));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// Like Medplum's server (express.json / express.urlencoded): JSON and form bodies are parsed,
// anything else leaves the body empty ({}).
async function parseBody(req) {
  const text = await readBody(req);
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (!text.trim()) {
    return {};
  }
  if (type === 'application/x-www-form-urlencoded') {
    const form = {};
    for (const [key, value] of new URLSearchParams(text)) {
      form[key] = key in form ? [form[key], value].flat() : value;
    }
    return form;
  }
  if (!JSON_TYPES.test(type)) {
    return {};
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OperationOutcomeError(badRequest(`Invalid JSON: ${err.message}`));
  }
}

async function handle(req) {
  const url = new URL(req.url ?? '/', baseUrl);
  if (url.pathname !== '/fhir' && !url.pathname.startsWith('/fhir/')) {
    throw new OperationOutcomeError({
      ...notFound,
      issue: [{ ...notFound.issue[0], diagnostics: `The FHIR base is ${baseUrl}` }],
    });
  }
  const path = url.pathname.slice('/fhir'.length);
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  if (method === 'GET' && path.replace(/\/$/, '') === '/metadata') {
    return [{ ...capabilityStatement }];
  }
  const body = ['POST', 'PUT', 'PATCH'].includes(method) ? await parseBody(req) : (req.resume(), {});
  const fhirReq = {
    method,
    url: path + url.search,
    pathname: '',
    params: {},
    query: Object.create(null),
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await serialized(() => router.handleRequest(fhirReq, repo));
  if (!resource) {
    if (!isOk(outcome)) {
      throw new OperationOutcomeError(outcome);
    }
    return [outcome, getStatus(outcome)];
  }
  const headers = {};
  if (resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (isCreated(outcome)) {
    headers.Location = `${baseUrl}/${resource.resourceType}/${resource.id}`;
  }
  return [resource, getStatus(outcome), headers];
}

function send(req, res, body, status = 200, headers = {}) {
  const minimal = req.headers.prefer === 'return=minimal';
  const text = req.method === 'HEAD' || minimal ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    ...(text ? { 'Content-Type': 'application/fhir+json; charset=utf-8' } : undefined),
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

const logRequests = /^(1|true|yes)$/i.test(process.env.MEDPLUM_LOG_REQUESTS ?? '');

const server = http.createServer((req, res) => {
  const t0 = process.hrtime.bigint();
  if (logRequests) {
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      console.log(`${req.method} ${req.url} ${res.statusCode} ${ms.toFixed(1)} ms`);
    });
  }
  handle(req)
    .then(([body, status, headers]) => send(req, res, body, status, headers))
    .catch((err) => {
      const outcome = err instanceof OperationOutcomeError ? err.outcome : normalizeOperationOutcome(err);
      const status = getStatus(outcome);
      if (status >= 500) {
        console.error('medplum test server: internal error', err);
      }
      send(req, res, outcome, status);
    });
});

server.on('error', (err) => {
  console.error(`medplum test server: cannot listen on ${HOST}:${port}: ${err.message}`);
  process.exit(1);
});

server.listen(port, HOST, () => {
  const ms = Number(process.hrtime.bigint() - startedAt) / 1e6;
  const rss = process.memoryUsage().rss / (1024 * 1024);
  console.log(
    `medplum test server listening on ${baseUrl} (fhir-router ${version}, ${resourceTypes.length} resource types, ` +
      `terminology checks ${repo.validateTerminology ? 'on' : 'off'}, startup ${ms.toFixed(0)} ms, rss ${rss.toFixed(0)} MiB)`
  );
});

// Nothing is persisted, so there is nothing to flush: stop at once.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    console.log(`medplum test server: ${signal}, stopping`);
    process.exit(0);
  });
}
