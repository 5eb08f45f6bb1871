// Self-test for the Medplum test server. Usage: node selftest.mjs http://127.0.0.1:PORT/fhir
// Needs a freshly started (empty) server; selftest.sh starts one.
const base = (process.argv[2] ?? process.env.MEDPLUM_BASE ?? 'http://127.0.0.1:18103/fhir').replace(/\/$/, '');
const FHIR = 'application/fhir+json';
const run = Date.now().toString(36); // makes identifiers unique per run

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const newUuid = () => 'urn:uuid:' + crypto.randomUUID();
const search = async (query) => (await call('GET', query)).body;
const outcomeText = (oo) => (oo?.issue ?? []).map((i) => i.diagnostics ?? i.details?.text).join(' | ');

async function main() {
  // 1. metadata
  const meta = await call('GET', 'metadata');
  check('metadata 200 application/fhir+json', meta.status === 200 && meta.headers.get('content-type')?.startsWith(FHIR));
  const rest = meta.body?.rest?.[0];
  const codes = (rest?.interaction ?? []).map((i) => i.code);
  const obsCap = rest?.resource?.find((r) => r.type === 'Observation');
  check('metadata fhirVersion 4.0.1', meta.body?.fhirVersion === '4.0.1');
  check('metadata lists transaction and batch', codes.includes('transaction') && codes.includes('batch'), codes);
  check(
    'metadata: Observation conditional create/update, search-type',
    obsCap?.conditionalCreate === true &&
      obsCap?.conditionalUpdate === true &&
      obsCap.interaction.some((i) => i.code === 'search-type')
  );

  // 2. idempotent transaction: conditional-create Patient + conditional-update Observation by urn:uuid
  const patSys = 'urn:test:selftest:patient';
  const obsSys = 'urn:test:selftest:obs';
  const patId = `p-${run}`;
  const obsIdent = `o-${run}`;
  const makeTx = () => {
    const patUrn = newUuid();
    return {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: patUrn,
          resource: {
            resourceType: 'Patient',
            identifier: [{ system: patSys, value: patId }],
            name: [{ family: 'Selftest', given: ['Lupus'] }],
            birthDate: '1985-04-12',
          },
          request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${patSys}|${patId}` },
        },
        {
          fullUrl: newUuid(),
          resource: {
            resourceType: 'Observation',
            status: 'final',
            identifier: [{ system: obsSys, value: obsIdent }],
            code: { coding: [{ system: 'http://loinc.org', code: '4548-4' }] },
            subject: { reference: patUrn },
            effectiveDateTime: '2021-06-01T10:00:00Z',
            valueQuantity: { value: 5.6, unit: '%' },
          },
          request: { method: 'PUT', url: `Observation?identifier=${encodeURIComponent(`${obsSys}|${obsIdent}`)}` },
        },
      ],
    };
  };
  const tx1 = await call('POST', '', makeTx());
  check('transaction #1 -> 200 transaction-response', tx1.status === 200 && tx1.body?.type === 'transaction-response', tx1.body);
  const statuses1 = (tx1.body?.entry ?? []).map((e) => e.response?.status);
  check('transaction #1 entries created (201, 201)', statuses1.join() === '201,201', statuses1);
  const tx2 = await call('POST', '', makeTx());
  const statuses2 = (tx2.body?.entry ?? []).map((e) => e.response?.status);
  check('transaction #2 -> 200, entries matched/updated (200, 200)', tx2.status === 200 && statuses2.join() === '200,200', {
    status: tx2.status,
    statuses2,
  });
  const pats = await search(`Patient?identifier=${encodeURIComponent(`${patSys}|${patId}`)}`);
  const obs = await search(`Observation?identifier=${encodeURIComponent(`${obsSys}|${obsIdent}`)}`);
  check('after two posts: exactly 1 Patient', pats?.total === 1 && pats.entry?.length === 1, pats?.total);
  check('after two posts: exactly 1 Observation', obs?.total === 1 && obs.entry?.length === 1, obs?.total);
  const patient = pats?.entry?.[0]?.resource;
  const observation = obs?.entry?.[0]?.resource;
  check(
    'urn:uuid reference resolved to Patient/<id>',
    observation?.subject?.reference === `Patient/${patient?.id}`,
    observation?.subject
  );
  const bySubject = await search(`Observation?subject=Patient/${patient?.id}`);
  const byPatient = await search(`Observation?patient=${patient?.id}`);
  check('search Observation?subject=Patient/<id>', bySubject?.total === 1, bySubject?.total);
  check('search Observation?patient=<id>', byPatient?.total === 1, byPatient?.total);
  const history = await call('GET', `Observation/${observation?.id}/_history`);
  check('Observation has 2 versions (create + conditional update)', history.body?.entry?.length === 2, history.body?.total);

  // 3. transaction with one invalid entry -> 400, nothing written
  const badIdent = `bad-${run}`;
  const badTx = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: newUuid(),
        resource: { resourceType: 'Patient', identifier: [{ system: patSys, value: badIdent }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        fullUrl: newUuid(),
        resource: { resourceType: 'Observation', identifier: [{ system: obsSys, value: badIdent }] },
        request: { method: 'POST', url: 'Observation' },
      },
    ],
  };
  const bad = await call('POST', '', badTx);
  check('invalid transaction -> 400 OperationOutcome', bad.status === 400 && bad.body?.resourceType === 'OperationOutcome', bad);
  check(
    'invalid transaction outcome names entry and missing status/code',
    /Bundle\.entry\[1\]/.test(outcomeText(bad.body)) &&
      /Observation\.status/.test(outcomeText(bad.body)) &&
      /Observation\.code/.test(outcomeText(bad.body)),
    outcomeText(bad.body)
  );
  const leftover = await search(`Patient?identifier=${encodeURIComponent(`${patSys}|${badIdent}`)}`);
  check('invalid transaction wrote nothing', leftover?.total === 0, leftover?.total);

  // 3b. failure discovered while processing (after a create was applied) is rolled back
  const lateIdent = `late-${run}`;
  const late = await call('POST', '', {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        resource: { resourceType: 'Patient', identifier: [{ system: patSys, value: lateIdent }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        resource: { ...patient, birthDate: '1999-01-01' },
        request: { method: 'PUT', url: `Patient/${patient?.id}`, ifMatch: 'W/"not-the-current-version"' },
      },
    ],
  });
  check('transaction failing at processing (If-Match) -> 412', late.status === 412, late);
  const lateLeft = await search(`Patient?identifier=${encodeURIComponent(`${patSys}|${lateIdent}`)}`);
  const patAfter = await call('GET', `Patient/${patient?.id}`);
  check('rolled back: created Patient gone, updated Patient unchanged', lateLeft?.total === 0 && patAfter.body?.birthDate === '1985-04-12', {
    left: lateLeft?.total,
    birthDate: patAfter.body?.birthDate,
  });

  // 4. paging: 25 Observations, _count=10, follow next links
  const pageCode = `page-${run}`;
  const batch = {
    resourceType: 'Bundle',
    type: 'batch',
    entry: Array.from({ length: 25 }, (_, i) => ({
      resource: {
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'urn:test:selftest:code', code: pageCode }] },
        subject: { reference: `Patient/${patient?.id}` },
        effectiveDateTime: `2020-01-${String(i + 1).padStart(2, '0')}`,
      },
      request: { method: 'POST', url: 'Observation' },
    })),
  };
  const batchRes = await call('POST', '', batch);
  check('batch of 25 creates -> all 201', (batchRes.body?.entry ?? []).filter((e) => e.response?.status === '201').length === 25);
  let url = `${base}/Observation?code=${encodeURIComponent(`urn:test:selftest:code|${pageCode}`)}&_count=10`;
  const seen = new Set();
  let pages = 0;
  let linksOnBase = true;
  while (url && pages < 10) {
    const page = (await call('GET', url)).body;
    pages++;
    for (const e of page?.entry ?? []) {
      seen.add(e.resource.id);
    }
    const next = page?.link?.find((l) => l.relation === 'next')?.url;
    if (next && !next.startsWith(base + '/Observation?')) {
      linksOnBase = false;
    }
    url = next;
  }
  check('paging: 3 pages of _count=10 cover all 25', pages === 3 && seen.size === 25, { pages, seen: seen.size });
  check('paging: next links are absolute on the base URL', linksOnBase);

  // 5. _lastUpdated gt / ge
  await sleep(20);
  const cut = new Date().toISOString();
  await sleep(20);
  const lateCode = `lu-${run}`;
  for (let i = 0; i < 3; i++) {
    await call('POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'urn:test:selftest:code', code: lateCode }] },
    });
  }
  const gt = await search(`Observation?_lastUpdated=gt${encodeURIComponent(cut)}&_count=100`);
  const ge = await search(`Observation?_lastUpdated=ge${encodeURIComponent(cut)}&_count=100`);
  const gtCodes = new Set((gt?.entry ?? []).map((e) => e.resource.code?.coding?.[0]?.code));
  check('_lastUpdated=gt<time> returns only the 3 later resources', gt?.total === 3 && gtCodes.size === 1 && gtCodes.has(lateCode), {
    total: gt?.total,
  });
  check('_lastUpdated=ge<time> returns the same 3', ge?.total === 3, ge?.total);

  // 6. token list with commas, date search
  const either = await search(
    `Observation?code=${encodeURIComponent(`urn:test:selftest:code|${lateCode},http://loinc.org|4548-4`)}&_count=0`
  );
  check('code=a,b (comma token list) -> 3 + 1', either?.total === 4, either?.total);
  const dated = await search(
    `Observation?code=${encodeURIComponent(`urn:test:selftest:code|${pageCode}`)}&date=ge2020-01-20&date=lt2020-01-23`
  );
  check('date=ge..&date=lt.. -> 3', dated?.total === 3, dated?.total);

  // 7. ResearchSubject?study=
  const study = await call('POST', 'ResearchStudy', { resourceType: 'ResearchStudy', status: 'active', title: 'selftest' });
  const subj = await call('POST', 'ResearchSubject', {
    resourceType: 'ResearchSubject',
    status: 'on-study',
    study: { reference: `ResearchStudy/${study.body?.id}` },
    individual: { reference: `Patient/${patient?.id}` },
  });
  const byStudy = await search(`ResearchSubject?study=ResearchStudy/${study.body?.id}`);
  check('ResearchSubject?study=ResearchStudy/<id>', subj.status === 201 && byStudy?.total === 1, byStudy?.total);

  // 8. direct conditional create / update, 412 on multiple matches
  const ccIdent = `cc-${run}`;
  const ccBody = { resourceType: 'Patient', identifier: [{ system: patSys, value: ccIdent }] };
  const cc1 = await call('POST', 'Patient', ccBody, { 'if-none-exist': `identifier=${patSys}|${ccIdent}` });
  const cc2 = await call('POST', 'Patient', ccBody, { 'if-none-exist': `identifier=${patSys}|${ccIdent}` });
  check('If-None-Exist: 201 then 200 with the same id', cc1.status === 201 && cc2.status === 200 && cc1.body?.id === cc2.body?.id, [
    cc1.status,
    cc2.status,
  ]);
  const cuUrl = `Observation?identifier=${encodeURIComponent(`${obsSys}|cu-${run}`)}`;
  const cuBody = {
    resourceType: 'Observation',
    status: 'preliminary',
    identifier: [{ system: obsSys, value: `cu-${run}` }],
    code: { text: 'x' },
  };
  const cu1 = await call('PUT', cuUrl, cuBody);
  const cu2 = await call('PUT', cuUrl, { ...cuBody, status: 'final' });
  check('conditional update: 201 then 200, same id', cu1.status === 201 && cu2.status === 200 && cu1.body?.id === cu2.body?.id, [
    cu1.status,
    cu2.status,
  ]);
  const multi = await call('PUT', `Observation?code=${encodeURIComponent(`urn:test:selftest:code|${pageCode}`)}`, {
    ...cuBody,
    identifier: undefined,
  });
  check('conditional update with multiple matches -> 412 OperationOutcome', multi.status === 412 && multi.body?.resourceType === 'OperationOutcome', multi.status);
  const invalidPut = await call('PUT', cuUrl, { ...cuBody, status: 'not-a-status' });
  check('conditional update with invalid resource -> 400', invalidPut.status === 400, invalidPut.status);

  // 9. errors
  const missing = await call('GET', 'Patient/does-not-exist');
  check('unknown resource -> 404 OperationOutcome', missing.status === 404 && missing.body?.resourceType === 'OperationOutcome');
  const badParam = await call('GET', 'Observation?not-a-param=1');
  check('unknown search parameter -> 400', badParam.status === 400, badParam.status);
  const batchBad = await call('POST', '', {
    resourceType: 'Bundle',
    type: 'batch',
    entry: [
      { resource: { resourceType: 'Observation', status: 'final' }, request: { method: 'POST', url: 'Observation' } },
      { resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'Patient' } },
    ],
  });
  const bStatuses = (batchBad.body?.entry ?? []).map((e) => e.response?.status);
  check('batch: invalid entry -> 400 in its response, valid entry -> 201', bStatuses.join() === '400,201', bStatuses);

  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exitCode = 1;
});
