// Self-test for the Medplum test server. Usage: node selftest.mjs http://127.0.0.1:PORT/fhir
// Needs a freshly started (empty) server; selftest.sh starts one. Last line: "N passed, N failed".
const base = (process.argv[2] ?? process.env.MEDPLUM_BASE ?? 'http://127.0.0.1:18103/fhir').replace(/\/$/, '');
const FHIR = 'application/fhir+json';
const run = Date.now().toString(36); // makes identifiers unique per run
const SYS = 'urn:test:selftest';

let passed = 0;
let failed = 0;

function check(name, condition, detail) {
  if (condition) {
    passed++;
    console.log(`ok   - ${name}`);
  } else {
    failed++;
    console.log(`FAIL - ${name}${detail !== undefined ? ': ' + JSON.stringify(detail).slice(0, 600) : ''}`);
  }
}

async function call(method, path, body, headers = {}) {
  const url = path.startsWith('http') ? path : `${base}/${path}`;
  const res = await fetch(url, {
    method,
    headers: { accept: FHIR, ...(body ? { 'content-type': FHIR } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

async function timed(label, promise) {
  const t0 = performance.now();
  const result = await promise;
  console.log(`measure: ${label}: ${(performance.now() - t0).toFixed(0)} ms (HTTP ${result.status})`);
  return result;
}

const uuid = () => 'urn:uuid:' + crypto.randomUUID();
const search = async (query) => (await call('GET', query)).body;
const text = (outcome) => (outcome?.issue ?? []).map((i) => i.details?.text ?? i.diagnostics).join(' | ');
const ident = (value) => encodeURIComponent(`${SYS}|${value}`);
const statuses = (bundle) => (bundle?.entry ?? []).map((e) => e.response?.status).join();
const tx = (entry) => ({ resourceType: 'Bundle', type: 'transaction', entry });
const patient = (value, extra = {}) => ({ resourceType: 'Patient', identifier: [{ system: SYS, value }], ...extra });
const observation = (value, extra = {}) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '4548-4' }] },
  identifier: [{ system: SYS, value }],
  ...extra,
});
const condCreate = (resource, value, fullUrl = uuid()) => ({
  fullUrl,
  resource,
  request: { method: 'POST', url: resource.resourceType, ifNoneExist: `identifier=${SYS}|${value}` },
});
const condPut = (resource, value) => ({
  fullUrl: uuid(),
  resource,
  request: { method: 'PUT', url: `${resource.resourceType}?identifier=${ident(value)}` },
});

async function main() {
  // 1. CapabilityStatement
  const meta = await call('GET', 'metadata');
  const rest = meta.body?.rest?.[0];
  const systemCodes = (rest?.interaction ?? []).map((i) => i.code);
  const obsCap = rest?.resource?.find((r) => r.type === 'Observation');
  const obsParams = (obsCap?.searchParam ?? []).map((p) => p.name);
  check('metadata 200, fhirVersion 4.0.1', meta.status === 200 && meta.body?.fhirVersion === '4.0.1', meta.status);
  check('metadata lists system transaction and batch', systemCodes.join() === 'transaction,batch', systemCodes);
  check(
    'metadata Observation: conditionalCreate/Update, updateCreate, conditionalDelete single',
    obsCap?.conditionalCreate &&
      obsCap.conditionalUpdate &&
      obsCap.updateCreate &&
      obsCap.conditionalDelete === 'single',
    obsCap && { ...obsCap, searchParam: undefined }
  );
  check(
    'metadata Observation search params: identifier, subject, date; not value-quantity (not matched in memory)',
    obsParams.includes('identifier') &&
      obsParams.includes('subject') &&
      obsParams.includes('date') &&
      !obsParams.includes('value-quantity'),
    obsParams
  );

  // 2. Medplum's transaction limits
  const ids50 = Array.from({ length: 51 }, (_, i) => `sel-${run}-${i}`);
  const put = (id) => ({ resource: patient(id, { id }), request: { method: 'PUT', url: `Patient/${id}` } });
  const tooMany = await call('POST', '', tx(ids50.map(put)));
  check(
    'transaction with 51 PUT updates -> 400 "Transaction contains more update operations than allowed"',
    tooMany.status === 400 && text(tooMany.body) === 'Transaction contains more update operations than allowed',
    [tooMany.status, text(tooMany.body)]
  );
  check('... and nothing was written', (await call('GET', `Patient/${ids50[0]}`)).status === 404);
  const strict = await call(
    'POST',
    '',
    tx([
      condPut(observation(`strict-${run}`), `strict-${run}`),
      ...Array.from({ length: 8 }, (_, i) => ({
        resource: patient(`strict-${run}-${i}`),
        request: { method: 'POST', url: 'Patient' },
      })),
    ])
  );
  check(
    '9 entries, one conditional -> 400 "Transaction requires strict isolation but has too many entries"',
    strict.status === 400 && text(strict.body) === 'Transaction requires strict isolation but has too many entries',
    [strict.status, text(strict.body)]
  );

  const patUrns = Array.from({ length: 4 }, () => uuid());
  const eight = () =>
    tx([
      ...patUrns.map((urn, i) =>
        condCreate(patient(`p8-${run}-${i}`, { birthDate: '1985-04-12' }), `p8-${run}-${i}`, urn)
      ),
      ...patUrns.map((urn, i) =>
        condPut(observation(`o8-${run}-${i}`, { subject: { reference: urn } }), `o8-${run}-${i}`)
      ),
    ]);
  const tx8 = await timed(
    'transaction of 8 conditional entries (4 If-None-Exist creates, 4 conditional PUTs), first post',
    call('POST', '', eight())
  );
  check(
    '8 conditional entries -> 200, all entries 201',
    tx8.status === 200 && statuses(tx8.body) === '201,201,201,201,201,201,201,201',
    [tx8.status, statuses(tx8.body), text(tx8.body)]
  );
  const tx8again = await timed('same transaction posted again', call('POST', '', eight()));
  check(
    'same 8 posted again -> 200, all entries 200 (matched)',
    tx8again.status === 200 && statuses(tx8again.body) === '200,200,200,200,200,200,200,200',
    [tx8again.status, statuses(tx8again.body)]
  );
  const pats = await search(`Patient?identifier=${ident(`p8-${run}-0`)}`);
  const obs = await search(`Observation?identifier=${ident(`o8-${run}-0`)}`);
  check('after two posts exactly one Patient and one Observation', pats?.total === 1 && obs?.total === 1, [
    pats?.total,
    obs?.total,
  ]);
  const pat = pats?.entry?.[0]?.resource;
  const ob = obs?.entry?.[0]?.resource;
  check('urn:uuid reference resolved to Patient/<id>', ob?.subject?.reference === `Patient/${pat?.id}`, ob?.subject);

  const entry0 = tx8.body?.entry?.[4];
  check(
    'transaction-response entry: response.status "201", location "Observation/<id>" (no _history), outcome, resource, no etag',
    entry0?.response?.status === '201' &&
      entry0.response.location === `Observation/${entry0.resource?.id}` &&
      entry0.response.outcome?.resourceType === 'OperationOutcome' &&
      entry0.resource?.resourceType === 'Observation' &&
      entry0.response.etag === undefined &&
      entry0.fullUrl === undefined,
    entry0 && { ...entry0, resource: entry0.resource?.resourceType }
  );

  const fifty = ids50.slice(0, 50);
  const tx50 = await timed('transaction of 50 PUT Patient/<id> (new ids)', call('POST', '', tx(fifty.map(put))));
  check(
    '50 PUT Type/id -> 200, entries 200 (update as create)',
    tx50.status === 200 && statuses(tx50.body) === Array(50).fill('200').join(),
    [tx50.status, text(tx50.body)]
  );
  const tx50again = await timed('same 50 PUTs again (updates)', call('POST', '', tx(fifty.map(put))));
  check('50 PUT Type/id again -> 200', tx50again.status === 200, tx50again.status);
  check(
    'PUT Patient/<new id> stored under that id',
    (await call('GET', `Patient/${fifty[49]}`)).body?.id === fifty[49]
  );

  // 3. conditional create / update, directly and in a transaction
  await call('POST', 'Patient', patient(`dup-${run}`));
  await call('POST', 'Patient', patient(`dup-${run}`));
  const ine = (v) => ({ 'if-none-exist': `identifier=${SYS}|${v}` });
  const cc0 = await call('POST', 'Patient', patient(`cc-${run}`), ine(`cc-${run}`));
  const cc1 = await call('POST', 'Patient', patient(`cc-${run}`), ine(`cc-${run}`));
  const cc2 = await call('POST', 'Patient', patient(`dup-${run}`), ine(`dup-${run}`));
  check(
    'direct conditional create: 0 matches 201, 1 match 200 same id, 2 matches 412',
    cc0.status === 201 && cc1.status === 200 && cc1.body?.id === cc0.body?.id && cc2.status === 412,
    [cc0.status, cc1.status, cc2.status, text(cc2.body)]
  );
  const cu0 = await call('PUT', `Patient?identifier=${ident(`cu-${run}`)}`, patient(`cu-${run}`));
  const cu1 = await call('PUT', `Patient?identifier=${ident(`cu-${run}`)}`, patient(`cu-${run}`, { active: true }));
  const cu2 = await call('PUT', `Patient?identifier=${ident(`dup-${run}`)}`, patient(`dup-${run}`));
  check(
    'direct conditional update: 0 matches 201, 1 match 200 same id, 2 matches 412',
    cu0.status === 201 && cu1.status === 200 && cu1.body?.id === cu0.body?.id && cu2.status === 412,
    [cu0.status, cu1.status, cu2.status, text(cu2.body)]
  );
  const tcc = async (v) => call('POST', '', tx([condCreate(patient(v), v)]));
  const tcc0 = await tcc(`tcc-${run}`);
  const tcc1 = await tcc(`tcc-${run}`);
  const tcc2 = await tcc(`dup-${run}`);
  check(
    'transaction conditional create: 0 -> entry 201, 1 -> entry 200, 2 -> 412',
    statuses(tcc0.body) === '201' && statuses(tcc1.body) === '200' && tcc2.status === 412,
    [statuses(tcc0.body), statuses(tcc1.body), tcc2.status, text(tcc2.body)]
  );
  const tcu = async (v) => call('POST', '', tx([condPut(patient(v), v)]));
  const tcu0 = await tcu(`tcu-${run}`);
  const tcu1 = await tcu(`tcu-${run}`);
  const tcu2 = await tcu(`dup-${run}`);
  check(
    'transaction conditional update: 0 -> entry 201, 1 -> entry 200, 2 -> 400 "Conditional PUT matched multiple resources"',
    statuses(tcu0.body) === '201' &&
      statuses(tcu1.body) === '200' &&
      tcu2.status === 400 &&
      text(tcu2.body) === 'Conditional PUT matched multiple resources',
    [statuses(tcu0.body), statuses(tcu1.body), tcu2.status, text(tcu2.body)]
  );

  // 4. a failing transaction leaves no trace
  const late = await call(
    'POST',
    '',
    tx([
      { resource: patient(`late-${run}`), request: { method: 'POST', url: 'Patient' } },
      {
        resource: { ...pat, birthDate: '1999-01-01' },
        request: { method: 'PUT', url: `Patient/${pat?.id}`, ifMatch: 'W/"not-the-version"' },
      },
    ])
  );
  const lateLeft = await search(`Patient?identifier=${ident(`late-${run}`)}`);
  const patAfter = (await call('GET', `Patient/${pat?.id}`)).body;
  check('transaction failing while processing (If-Match) -> 412', late.status === 412, [late.status, text(late.body)]);
  check(
    'rolled back: created Patient gone, updated Patient unchanged',
    lateLeft?.total === 0 && patAfter?.birthDate === '1985-04-12',
    [lateLeft?.total, patAfter?.birthDate]
  );
  const late2 = await call(
    'POST',
    '',
    tx([
      { resource: patient(`late2-${run}`), request: { method: 'POST', url: 'Patient' } },
      { resource: { ...pat, gender: 'female' }, request: { method: 'PUT', url: `Patient/${pat?.id}` } },
      {
        resource: { ...cu1.body, active: false },
        request: { method: 'PUT', url: `Patient/${cu1.body?.id}`, ifMatch: 'W/"not-the-version"' },
      },
    ])
  );
  const versions = (await call('GET', `Patient/${pat?.id}/_history`)).body?.entry ?? [];
  check(
    'transaction failing after a create and an update -> 412, both undone (no new version)',
    late2.status === 412 &&
      (await search(`Patient?identifier=${ident(`late2-${run}`)}`))?.total === 0 &&
      versions.length === 1 &&
      !versions[0].resource.gender,
    [late2.status, versions.length]
  );

  // 5. validation
  const invalid = await call('POST', 'Observation', { resourceType: 'Observation', code: { text: 'x' } });
  check(
    'invalid resource -> 400 OperationOutcome naming Observation.status',
    invalid.status === 400 && invalid.body?.issue?.some((i) => i.expression?.includes('Observation.status')),
    [invalid.status, invalid.body]
  );
  const badTx = await call(
    'POST',
    '',
    tx([
      { resource: patient(`bad-${run}`), request: { method: 'POST', url: 'Patient' } },
      { resource: { resourceType: 'Observation' }, request: { method: 'POST', url: 'Observation' } },
    ])
  );
  check(
    'transaction with an invalid entry -> 400, nothing written',
    badTx.status === 400 && (await search(`Patient?identifier=${ident(`bad-${run}`)}`))?.total === 0,
    [badTx.status, text(badTx.body)]
  );
  const badBatch = await call('POST', '', {
    resourceType: 'Bundle',
    type: 'batch',
    entry: [
      { resource: { resourceType: 'Observation' }, request: { method: 'POST', url: 'Observation' } },
      { resource: patient(`b-${run}`), request: { method: 'POST', url: 'Patient' } },
    ],
  });
  check(
    'batch: invalid entry -> 400 in its response, valid entry -> 201',
    badBatch.status === 200 && statuses(badBatch.body) === '400,201',
    statuses(badBatch.body)
  );
  const gender = await call('POST', 'Patient', patient(`g-${run}`, { gender: 'x' }));
  check(
    'value outside a required binding -> 400 "did not satisfy terminology binding"',
    gender.status === 400 && /did not satisfy terminology binding/.test(text(gender.body)),
    [gender.status, text(gender.body)]
  );

  // 6. unknown search parameters
  const unknown = await call('GET', 'Observation?not-a-param=1');
  check(
    'unknown search parameter -> 400 "Unknown search parameter: not-a-param"',
    unknown.status === 400 && text(unknown.body) === 'Unknown search parameter: not-a-param',
    [unknown.status, text(unknown.body)]
  );
  const unknownIne = await call('POST', 'Patient', patient(`u-${run}`), {
    'if-none-exist': `identifer=${SYS}|u-${run}`,
  });
  check(
    'misspelt If-None-Exist parameter -> 400, nothing created',
    unknownIne.status === 400 && (await search(`Patient?identifier=${ident(`u-${run}`)}`))?.total === 0,
    unknownIne.status
  );
  const unknownSort = await call('GET', 'Patient?_sort=not-a-param');
  check('unknown _sort -> 400', unknownSort.status === 400, unknownSort.status);

  // 7. paging
  const code = `page-${run}`;
  const batch = {
    resourceType: 'Bundle',
    type: 'batch',
    entry: Array.from({ length: 25 }, (_, i) => ({
      resource: observation(`pg-${run}-${i}`, {
        code: { coding: [{ system: SYS, code }] },
        subject: { reference: `Patient/${pat?.id}` },
        effectiveDateTime: `2020-01-${String(i + 1).padStart(2, '0')}`,
      }),
      request: { method: 'POST', url: 'Observation' },
    })),
  };
  check(
    'batch of 25 creates -> all 201',
    statuses((await call('POST', '', batch)).body) === Array(25).fill('201').join()
  );
  let url = `${base}/Observation?code=${ident(code)}&_count=10`;
  const seen = new Set();
  let pages = 0;
  let onBase = true;
  while (url && pages < 10) {
    const page = (await call('GET', url)).body;
    pages++;
    (page?.entry ?? []).forEach((e) => seen.add(e.resource.id));
    url = page?.link?.find((l) => l.relation === 'next')?.url;
    onBase &&= !url || url.startsWith(`${base}/Observation?`);
  }
  check('paging: next links, 3 pages of _count=10 cover all 25', pages === 3 && seen.size === 25, {
    pages,
    seen: seen.size,
  });
  check('paging: next links are absolute URLs on the base', onBase);
  const defaultPage = await search(`Observation?code=${ident(code)}`);
  check(
    'default page size 20, with a next link and entry.fullUrl',
    defaultPage?.entry?.length === 20 &&
      defaultPage.link?.some((l) => l.relation === 'next') &&
      defaultPage.entry[0].fullUrl === `${base}/Observation/${defaultPage.entry[0].resource.id}`,
    defaultPage?.entry?.length
  );
  const bigPage = await search(`Observation?code=${ident(code)}&_count=5000`);
  check('_count above 1000 is capped at 1000', bigPage?.link?.[0]?.url.includes('_count=1000'), bigPage?.link?.[0]);
  const dated = await search(`Observation?code=${ident(code)}&date=ge2020-01-20&date=lt2020-01-23`);
  const bySubject = await search(`Observation?subject=Patient/${pat?.id}&_count=0`);
  const byPatient = await search(`Observation?patient=${pat?.id}&_count=0`);
  check(
    'date range, subject= and patient= searches',
    dated?.total === 3 && bySubject?.total === 26 && byPatient?.total === 26,
    [dated?.total, bySubject?.total, byPatient?.total]
  );

  // 8. reads, history, errors
  const history = (await call('GET', `Patient/${cu0.body?.id}/_history`)).body?.entry ?? [];
  const historyAgain = (await call('GET', `Patient/${cu0.body?.id}/_history`)).body?.entry ?? [];
  check(
    'history newest first, the same on every read',
    history.length === 2 && history[0].resource.active === true && historyAgain[0].resource.active === true,
    history.length
  );
  const missing = await call('GET', 'Patient/does-not-exist');
  check(
    'unknown resource -> 404 OperationOutcome',
    missing.status === 404 && missing.body?.resourceType === 'OperationOutcome',
    missing.status
  );
  check(
    'create -> Location [base]/Type/id, ETag W/"<versionId>"',
    cc0.headers.get('location') === `${base}/Patient/${cc0.body?.id}` &&
      cc0.headers.get('etag') === `W/"${cc0.body?.meta?.versionId}"`,
    [cc0.headers.get('location'), cc0.headers.get('etag')]
  );

  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exitCode = 1;
});
