"""What an HTTP status means, decided in one pure function, ``classify(status, outcome)``.

Servers word their refusals differently (Medplum answers a conditional update that matches twice with 400,
HAPI with 412), so for 400/409/422 the server's words (its OperationOutcome, or the text of a body that was
not one) refine the status. Everything that acts on a status asks here: the error class of a failed request
(``error_class``), the retry transport (transient, and a 409 lock or version race), push (a refusal of the
entries is isolated to the resource refused), the look-ups and bulk export (gone), the SMART flow (a 401
re-authenticates once) and pull's query planner (too long, refused).

Verdicts:
- ``ok``: not an error (below 400)
- ``transient``: 408, 429, 500, 502, 503, 504: worth repeating a request that is safe to repeat
- ``multiple-matches``: 412, or a 400/409/422 saying a conditional write matched several resources
- ``too-large``: 413, or a 400/422 refusing a Bundle for its number of entries or operations
- ``unsupported``: a 400 naming a search parameter the server does not support
- ``refused``: any other 400 or 422: the server refused what we sent (a resource, a parameter)
- ``conflict``: 409: the server's state moved under the request (a lock or version race)
- ``too-long``: 414 or 431: the URL or its headers are too long for this server
- ``not-found``: 404 or 410: not there, or gone
- ``auth-refused``: 401: the credentials were not accepted
- ``forbidden``: 403: accepted, but not allowed
- ``fatal``: anything else (405, 501, ...), and no status at all (no answer to judge)
"""

from __future__ import annotations

import re
from typing import Literal

from fhir_lupus.errors import Outcome

__all__ = ["TRANSIENT_STATUS", "Verdict", "classify"]

Verdict = Literal[
    "ok",
    "transient",
    "multiple-matches",
    "too-large",
    "unsupported",
    "refused",
    "conflict",
    "too-long",
    "not-found",
    "auth-refused",
    "forbidden",
    "fatal",
]

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BY_STATUS: dict[int, Verdict] = {
    400: "refused",
    422: "refused",
    409: "conflict",
    412: "multiple-matches",
    413: "too-large",
    414: "too-long",
    431: "too-long",
    404: "not-found",
    410: "not-found",
    401: "auth-refused",
    403: "forbidden",
}

# How servers word the refusals that a client can act on (matched case-insensitively in the server's message).
_TOO_LARGE = re.compile(
    r"too many (entries|operations|resources|requests)|has too many|more \w+( \w+)? (operations|entries) than"
    r"|more than \d+ (entries|operations|resources)|exceeds? (the )?(maximum|max|limit)|bundle (is )?too (large|big)"
    r"|maximum (number|size) of (entries|operations)",
    re.IGNORECASE,
)
_MULTIPLE_MATCHES = re.compile(
    r"match(ed|es)? (multiple|more than one|\d+) (resources|matches)|multiple (matches|resources match)",
    re.IGNORECASE,
)
_UNKNOWN_PARAMETER = re.compile(r"(unknown|unsupported|invalid|not a (valid|known)) search param", re.IGNORECASE)


def classify(status: int | None, outcome: Outcome | str | None = None) -> Verdict:
    """What ``status`` means, its words being ``outcome``: the server's OperationOutcome, or the text of an
    answer that was not one (an OAuth error, plain text). Without words the status alone decides."""
    if status is None:
        return "fatal"
    if status < 400:
        return "ok"
    if status in TRANSIENT_STATUS:
        return "transient"
    words = outcome.text if isinstance(outcome, Outcome) else outcome or ""
    if status in (400, 409, 422) and _MULTIPLE_MATCHES.search(words):
        return "multiple-matches"
    if status in (400, 422) and _TOO_LARGE.search(words):
        return "too-large"
    if status == 400 and _UNKNOWN_PARAMETER.search(words):
        return "unsupported"
    return _BY_STATUS.get(status, "fatal")
