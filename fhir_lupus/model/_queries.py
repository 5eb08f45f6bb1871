"""Queries like an EDC: every query finding as a row a data manager sends to the site and tracks.

A query's id is derived from its check id, the file, the row's business key and the column (never the line), so
it stays the same when rows move and a site's answer keeps pointing at it. The optional
``query_responses.csv`` of the data directory answers queries (docs/csv-layout.md):

- a response that confirms the current value (``confirmed_value`` equal to the cell) closes the query: a
  confirmed extreme value stops coming back;
- a confirmed value the cell no longer holds reopens it (the data changed since: look again);
- a response without a confirmed value (``will correct``) leaves it open, answered.

Closed queries are counted, not listed. Notes are not queries and are never written here.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fhir_lupus._scratch import write_csv
from fhir_lupus.model._csv import read_rows
from fhir_lupus.model._reading import validated
from fhir_lupus.model._records import Finding, LoadReport

__all__ = [
    "QUERY_COLUMNS",
    "RESPONSES",
    "Query",
    "QueryLog",
    "QueryResponse",
    "query_id",
    "track_queries",
    "write_queries",
]

RESPONSES = "query_responses.csv"
QueryStatus = Literal["open", "answered", "reopened", "closed"]
QUERY_COLUMNS = (
    "query_id",
    "check",
    "severity",
    "status",
    "subject_id",
    "file",
    "line",
    "column",
    "value",
    "message",
    "response",
    "responded_by",
    "responded_on",
)


class QueryResponse(BaseModel):
    """One row of query_responses.csv: the site's answer to a query."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    query_id: str = Field(pattern=r"^Q-[0-9a-f]{12}$")
    response: str = Field(min_length=1)
    confirmed_value: str | None = None
    responded_by: str = Field(min_length=1)
    responded_on: date


@dataclass(frozen=True)
class Query:
    id: str
    finding: Finding
    status: QueryStatus
    response: QueryResponse | None = None


@dataclass(frozen=True)
class QueryLog:
    """Every query of a load, with its status; ``resolved``: answered queries that no check raises any more."""

    queries: tuple[Query, ...]
    resolved: tuple[str, ...] = ()

    @property
    def open(self) -> list[Query]:
        return [query for query in self.queries if query.status != "closed"]

    def counts(self) -> Counter[tuple[str, str]]:
        """(check, status) -> number of queries."""
        return Counter((query.finding.kind, query.status) for query in self.queries)


def query_id(finding: Finding) -> str:
    """``Q-`` and 12 hex digits of SHA-256 over check id, file, record key (or subject) and column."""
    record = finding.record or finding.subject_id or ""
    text = "|".join((finding.kind, finding.file, record, finding.column or ""))
    return "Q-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def read_responses(data_dir: Path | None, report: LoadReport) -> dict[str, QueryResponse]:
    """The latest response to each query (by responded_on, then file order); bad rows are refused into
    ``report`` like any other file's. No ``data_dir`` (a trial loaded in memory): no responses."""
    latest: dict[str, QueryResponse] = {}
    path = data_dir / RESPONSES if data_dir is not None else None
    if path is None or not path.is_file():
        return latest
    for line, row, problem in read_rows(path, QueryResponse):
        report.read[RESPONSES] += 1
        if problem:
            report.reject((RESPONSES, line, row), None, problem)
            continue
        response = validated(QueryResponse, (RESPONSES, line, row), report)
        if response is None:
            continue
        earlier = latest.get(response.query_id)
        if earlier is None or response.responded_on >= earlier.responded_on:
            latest[response.query_id] = response
    return latest


def track_queries(report: LoadReport, data_dir: Path | None) -> QueryLog:
    """The queries of ``report`` with the site's responses applied (module docstring)."""
    responses = read_responses(data_dir, report)
    queries = []
    seen = set()
    for finding in report.queries:
        qid = query_id(finding)
        if qid in seen:  # one check on one cell raised twice (a chunk boundary): one query
            continue
        seen.add(qid)
        response = responses.get(qid)
        status: QueryStatus = "open"
        if response is not None:
            confirmed = response.confirmed_value
            if confirmed is None:
                status = "answered"
            elif confirmed.strip() == (finding.value or "").strip():
                status = "closed"
            else:
                status = "reopened"
        queries.append(Query(qid, finding, status, response))
    resolved = tuple(sorted(set(responses) - seen))
    return QueryLog(tuple(queries), resolved)


def write_queries(log: QueryLog, path: Path) -> int:
    """Write the queries that are not closed as CSV (QUERY_COLUMNS), atomically; returns how many."""
    rows = log.open
    write_csv(path, [QUERY_COLUMNS, *(_query_row(query) for query in rows)])
    return len(rows)


def _query_row(query: Query) -> tuple[object, ...]:
    finding, response = query.finding, query.response
    return (
        query.id,
        finding.kind,
        finding.severity,
        query.status,
        finding.subject_id or "",
        finding.file,
        finding.line or "",
        finding.column or "",
        finding.value or "",
        finding.message,
        response.response if response else "",
        response.responded_by if response else "",
        response.responded_on.isoformat() if response else "",
    )
