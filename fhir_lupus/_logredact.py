"""Log redaction: no names, MRNs, birth dates, tokens or private keys in any log record, DEBUG included.

At the source, fhir_lupus logs request paths through ``redact_url`` (query values replaced) and HTTP errors
carry redacted URLs in their messages. As a safety net, ``RedactingFilter`` rewrites every record of the
package's loggers and of httpx/httpcore (httpx logs each request URL at INFO; httpcore logs response headers at
DEBUG): ``install()`` puts it on them, and FhirClient calls it when created. The filter removes

* query values of every parameter not in ``SAFE_PARAMETERS`` (``Patient?identifier=...|MRN`` becomes
  ``Patient?identifier=[redacted]``), in whole URLs and in bare ``Type?query`` paths;
* ``system|value`` tokens (``http://hospital/mrn|12345`` becomes ``http://hospital/mrn|[redacted]``);
* Bearer/Basic credentials, JWTs, ``access_token``-like JSON fields, PEM private keys;
* values of FHIR fields that hold personal data (``family``, ``given``, ``birthDate``, identifier ``value``...);
* any string registered with ``register_secret`` (tokens and keys the process holds).

A filter on a logger sees only the records logged on that very logger, so it goes on each httpcore logger.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "REDACTED",
    "SAFE_PARAMETERS",
    "RedactingFilter",
    "install",
    "redact",
    "redact_url",
    "register_secret",
]

REDACTED = "[redacted]"
# Query parameters whose values never identify a person: paging, formatting, code and status filters.
SAFE_PARAMETERS = frozenset(
    {
        "_count",
        "_getpages",
        "_getpagesoffset",
        "_offset",
        "_pretty",
        "_bundletype",
        "_summary",
        "_total",
        "_sort",
        "_elements",
        "_format",
        "_include",
        "_revinclude",
        "_lastUpdated",
        "_since",
        "_type",
        "code",
        "category",
        "status",
    }
)
LOGGERS = (
    "fhir_lupus",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)

_SECRETS: set[str] = set()
_MIN_SECRET = 6  # shorter strings would redact ordinary words

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)(\s+|%20)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_SECRET_FIELD = re.compile(
    r"""(["']?(?:access_token|refresh_token|id_token|client_assertion|client_secret|password|authorization)["']?"""
    r"""\s*[:=,]\s*b?)(["'])(?:(?!\2).)*\2""",
    re.IGNORECASE,
)
_SECRET_FORM = re.compile(
    r"\b(access_token|refresh_token|id_token|client_assertion|client_secret|password)=[^&\s'\"]+", re.IGNORECASE
)
# FHIR fields holding names, birth dates, identifier values, free text, addresses and contacts (JSON or repr)
_PHI_FIELD = re.compile(
    r"""(["'](?:family|given|prefix|suffix|birthDate|value|text|line|city|postalCode|display|name)["']\s*:\s*)"""
    r"""(\[[^\]]*\]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
)
_SYSTEM_VALUE = re.compile(r"""((?:https?|urn):[^\s|'"&<>]*?)(\||%7C|%7c)([^\s&'"<>),\]]+)""")
# a URL or a relative FHIR search path (Type?query), up to whitespace or a quote
_QUERY = re.compile(r"""((?:https?://[^\s?'"<>]*|\b[A-Z][A-Za-z]+(?:/[^\s?'"<>]*)?)\?)([^\s'"<>]+)""")


def register_secret(value: str | bytes | None) -> None:
    """Redact this exact string (a token, a key, a password) from every log record from now on."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value and len(value) >= _MIN_SECRET:
        _SECRETS.add(value)
        for line in value.splitlines():  # a PEM key logged line by line; its armour lines are no secret
            if len(line.strip()) >= 16 and not line.startswith("-----"):
                _SECRETS.add(line.strip())


def _redact_query(query: str) -> str:
    parts = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        base = name.split(":")[0]  # modifiers: identifier:of-type, code:text ...
        safe = base in SAFE_PARAMETERS and not name.endswith(":text")
        parts.append(f"{quote(name, safe=':_.-')}={quote(value, safe=':/|,._-') if safe else REDACTED}")
    return "&".join(parts)


def redact_url(url: str) -> str:
    """The URL or path with the value of every query parameter not in SAFE_PARAMETERS replaced."""
    if "?" not in url:
        return url
    head, _, query = url.partition("?")
    split = urlsplit(url)
    if split.username or split.password:
        head = head.replace(f"{split.netloc}", split.netloc.rpartition("@")[2], 1)
    return f"{head}?{_redact_query(query.partition('#')[0])}"


def redact(text: str) -> str:
    """The text with every kind of sensitive value this module knows replaced by [redacted]."""
    text = _PEM.sub("[redacted private key]", text)  # first: a whole key, even one never registered
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _JWT.sub("[redacted jwt]", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
    text = _SECRET_FORM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    pieces, end = [], 0  # queries: by parameter (codes stay readable); the rest: system|value tokens
    for match in _QUERY.finditer(text):
        pieces.append(_redact_tokens(text[end : match.start()]))
        pieces.append(match.group(1) + _redact_query(match.group(2)))
        end = match.end()
    text = "".join([*pieces, _redact_tokens(text[end:])])
    return _PHI_FIELD.sub(lambda m: f"{m.group(1)}{_quoted_redacted(m.group(2))}", text)


def _redact_tokens(text: str) -> str:
    return _SYSTEM_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def _quoted_redacted(value: str) -> str:
    return f'"{REDACTED}"' if not value.startswith("[") else f'["{REDACTED}"]'


class RedactingFilter(logging.Filter):
    """Rewrites the record's message (arguments merged in) and its exception text through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep what can be shown safely
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install() -> None:
    """Put the redacting filter on the package's and httpx/httpcore's loggers (once each)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def get_logger(name: str) -> logging.Logger:
    """A fhir_lupus logger with the redacting filter on it (records are filtered on the logger they hit)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
