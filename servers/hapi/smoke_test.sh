#!/usr/bin/env bash
# Smoke test of a running HAPI test server: ./smoke_test.sh [PORT]
# Checks metadata, conditional create/update in a transaction (twice: no duplicates),
# paging (Bundle.link[next]), _lastUpdated, transaction rollback, $export, and retiring and
# restoring a built-in search parameter (needs HAPI's REINDEX job).
# Writes resources with identifiers under urn:fhir-lupus:smoke:*; run it on a fresh server.
set -u
PORT="${1:-${HAPI_PORT:-18080}}"
BASE="http://127.0.0.1:${PORT}/fhir"
CT='Content-Type: application/fhir+json'
FAILED=0
PASSED=0
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

ok() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
ko() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
# json FILE PYTHON-EXPR  (the parsed document is d)
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

transaction_bundle() {
	cat <<'EOF'
{"resourceType": "Bundle", "type": "transaction", "entry": [
 {"fullUrl": "urn:uuid:6a3c1e52-1f0e-4a53-9a2c-000000000001",
  "resource": {"resourceType": "Patient",
   "identifier": [{"system": "urn:fhir-lupus:smoke:patient", "value": "p-001"}],
   "name": [{"family": "Smoke", "given": ["Test"]}], "gender": "female", "birthDate": "1980-01-01"},
  "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:fhir-lupus:smoke:patient|p-001"}},
 {"fullUrl": "urn:uuid:6a3c1e52-1f0e-4a53-9a2c-000000000002",
  "resource": {"resourceType": "Observation",
   "identifier": [{"system": "urn:fhir-lupus:smoke:obs", "value": "o-001"}],
   "status": "final",
   "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
   "subject": {"reference": "urn:uuid:6a3c1e52-1f0e-4a53-9a2c-000000000001"},
   "effectiveDateTime": "2024-05-01",
   "valueQuantity": {"value": 12.5, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}},
  "request": {"method": "PUT", "url": "Observation?identifier=urn:fhir-lupus:smoke:obs|o-001"}}
]}
EOF
}

# 1. CapabilityStatement
code=$(curl -s -o "$TMP/meta.json" -w '%{http_code}' "$BASE/metadata")
if [ "$code" = 200 ] && [ "$(json "$TMP/meta.json" "d['resourceType'] + ' ' + d['fhirVersion']")" = "CapabilityStatement 4.0.1" ]; then
	ok "GET /metadata -> 200 CapabilityStatement fhirVersion 4.0.1"
else
	ko "GET /metadata -> $code"
fi

BEFORE="$(date -u +%Y-%m-%dT%H:%M:%S.000Z)"
sleep 1

# 2. Transaction with conditional create + conditional update, posted twice
for round in 1 2; do
	code=$(transaction_bundle | curl -s -o "$TMP/tx$round.json" -w '%{http_code}' -H "$CT" -X POST --data-binary @- "$BASE")
	statuses=$(json "$TMP/tx$round.json" "' '.join(e['response']['status'] for e in d.get('entry', []))" 2>/dev/null)
	if [ "$code" = 200 ]; then ok "transaction round $round -> 200, entry statuses: $statuses"; else ko "transaction round $round -> $code"; fi
done
pid1=$(json "$TMP/tx1.json" "d['entry'][0]['response']['location'].split('/')[1]")
pid2=$(json "$TMP/tx2.json" "d['entry'][0]['response']['location'].split('/')[1]")
[ "$pid1" = "$pid2" ] && ok "same Patient id both rounds ($pid1)" || ko "Patient ids differ: $pid1 vs $pid2"

curl -s -o "$TMP/p.json" "$BASE/Patient?identifier=urn:fhir-lupus:smoke:patient%7Cp-001&_total=accurate"
n=$(json "$TMP/p.json" "d.get('total')")
[ "$n" = 1 ] && ok "Patient?identifier=... total=1" || ko "Patient?identifier=... total=$n"
curl -s -o "$TMP/o.json" "$BASE/Observation?identifier=urn:fhir-lupus:smoke:obs%7Co-001&_total=accurate"
n=$(json "$TMP/o.json" "d.get('total')")
subj=$(json "$TMP/o.json" "d['entry'][0]['resource']['subject']['reference']")
[ "$n" = 1 ] && ok "Observation?identifier=... total=1" || ko "Observation?identifier=... total=$n"
[ "$subj" = "Patient/$pid1" ] && ok "urn:uuid reference resolved to $subj" || ko "Observation.subject=$subj"

# 3. Paging: 5 Observations, _count=2, follow next links
for i in 1 2 3 4 5; do
	curl -s -o /dev/null -H "$CT" -X PUT --data-binary \
		"{\"resourceType\":\"Observation\",\"id\":\"smoke-page-$i\",\"status\":\"final\",\"code\":{\"text\":\"paging\"},\"subject\":{\"reference\":\"Patient/$pid1\"},\"identifier\":[{\"system\":\"urn:fhir-lupus:smoke:page\",\"value\":\"$i\"}]}" \
		"$BASE/Observation/smoke-page-$i"
done
url="$BASE/Observation?identifier=urn:fhir-lupus:smoke:page%7C&_count=2"
pages=0
seen=0
while [ -n "$url" ] && [ $pages -lt 10 ]; do
	curl -s -o "$TMP/page.json" "$url"
	pages=$((pages + 1))
	seen=$((seen + $(json "$TMP/page.json" "len(d.get('entry', []))")))
	url=$(json "$TMP/page.json" "next((l['url'] for l in d.get('link', []) if l['relation'] == 'next'), '')")
done
[ "$pages" = 3 ] && [ "$seen" = 5 ] && ok "paging: _count=2 gave $seen entries over $pages pages via link[next]" \
	|| ko "paging: $seen entries over $pages pages"

# 4. _lastUpdated
curl -s -o "$TMP/lu.json" "$BASE/Observation?_lastUpdated=gt$BEFORE&_total=accurate&_summary=count"
n=$(json "$TMP/lu.json" "d.get('total')")
[ "$n" = 6 ] && ok "Observation?_lastUpdated=gt$BEFORE total=6" || ko "_lastUpdated total=$n (expected 6)"
curl -s -o "$TMP/lu2.json" "$BASE/Observation?_lastUpdated=lt$BEFORE&_summary=count"
n=$(json "$TMP/lu2.json" "d.get('total')")
[ "$n" = 0 ] && ok "Observation?_lastUpdated=lt$BEFORE total=0" || ko "_lastUpdated lt total=$n (expected 0)"

# 5. A transaction with one invalid entry is rolled back whole
code=$(curl -s -o "$TMP/bad.json" -w '%{http_code}' -H "$CT" -X POST --data-binary @- "$BASE" <<'EOF'
{"resourceType": "Bundle", "type": "transaction", "entry": [
 {"fullUrl": "urn:uuid:6a3c1e52-1f0e-4a53-9a2c-0000000000b1",
  "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:fhir-lupus:smoke:patient", "value": "p-rollback"}]},
  "request": {"method": "POST", "url": "Patient"}},
 {"fullUrl": "urn:uuid:6a3c1e52-1f0e-4a53-9a2c-0000000000b2",
  "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "dangling"},
   "subject": {"reference": "Patient/does-not-exist-42"}},
  "request": {"method": "POST", "url": "Observation"}}
]}
EOF
)
curl -s -o "$TMP/rb.json" "$BASE/Patient?identifier=urn:fhir-lupus:smoke:patient%7Cp-rollback&_summary=count"
n=$(json "$TMP/rb.json" "d.get('total')")
if [ "$code" -ge 400 ] && [ "$n" = 0 ]; then
	ok "invalid transaction -> $code, its valid Patient was rolled back (total=0)"
else
	ko "invalid transaction -> $code, rollback Patient total=$n"
fi

# 6. Bulk export ($export, async)
curl -s -D "$TMP/exp.h" -o /dev/null -H 'Prefer: respond-async' -H 'Accept: application/fhir+json' \
	"$BASE/\$export?_type=Patient,Observation"
status_url=$(grep -i '^content-location:' "$TMP/exp.h" | tr -d '\r' | cut -d' ' -f2)
if [ -z "$status_url" ]; then
	ko "\$export: no Content-Location ($(head -1 "$TMP/exp.h" | tr -d '\r'))"
else
	code=202
	for _ in $(seq 1 60); do
		code=$(curl -s -o "$TMP/exps.json" -w '%{http_code}' "$status_url")
		[ "$code" = 202 ] || break
		sleep 1
	done
	if [ "$code" = 200 ]; then
		outputs=$(json "$TMP/exps.json" "','.join(sorted(o['type'] for o in d['output']))")
		ok "\$export finished, outputs: $outputs"
	else
		ko "\$export status -> $code"
	fi
fi

# 7. Retire the built-in Organization.identifier search parameter, then restore it. Writing a
#    SearchParameter starts HAPI's REINDEX job; an Organization stored while the parameter is
#    retired is found by identifier once that job has run after the restore.
SP_URL="$BASE/SearchParameter/smoke-retire-organization-identifier"
code=$(curl -s -o "$TMP/sp.json" -w '%{http_code}' -H "$CT" -X PUT --data-binary @- "$SP_URL" <<'EOF'
{"resourceType": "SearchParameter", "id": "smoke-retire-organization-identifier",
 "url": "urn:fhir-lupus:smoke:SearchParameter/retire-organization-identifier",
 "name": "identifier", "status": "retired", "description": "Retires Organization.identifier (smoke test)",
 "code": "identifier", "base": ["Organization"], "type": "token", "expression": "Organization.identifier"}
EOF
)
if [ "$code" = 201 ] || [ "$code" = 200 ]; then
	ok "PUT retired SearchParameter -> $code"
else
	ko "PUT retired SearchParameter -> $code $(head -c 300 "$TMP/sp.json")"
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/Organization?identifier=urn:fhir-lupus:smoke:org%7Co-001")
[ "$code" = 400 ] && ok "Organization?identifier=... refused while retired (400)" || ko "Organization?identifier=... while retired -> $code"
curl -s -o /dev/null -H "$CT" -X PUT --data-binary \
	'{"resourceType":"Organization","id":"smoke-org-1","identifier":[{"system":"urn:fhir-lupus:smoke:org","value":"o-001"}],"name":"Smoke"}' \
	"$BASE/Organization/smoke-org-1"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$SP_URL")
[ "$code" = 200 ] && ok "DELETE SearchParameter (restore) -> 200" || ko "DELETE SearchParameter -> $code"
n=""
for _ in $(seq 1 60); do
	curl -s -o "$TMP/org.json" "$BASE/Organization?identifier=urn:fhir-lupus:smoke:org%7Co-001&_summary=count"
	n=$(json "$TMP/org.json" "d.get('total')" 2>/dev/null)
	[ "$n" = 1 ] && break
	sleep 0.5
done
[ "$n" = 1 ] && ok "restored: the Organization stored while retired is found after the reindex" || ko "restored: Organization?identifier=... total=$n"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
