"""The FHIR HTTP client: transport, auth, retries, paging and capability checks live only here."""

from fhir_lupus.client._auth import BasicAuth, BearerAuth, SmartBackendAuth
from fhir_lupus.client._bulk import NDJSON, ExportFile, ExportManifest, ExportRequest, ExportStatus
from fhir_lupus.client._capability import Capabilities, WriteStrategy
from fhir_lupus.client._classify import Verdict, classify
from fhir_lupus.client._client import FHIR_JSON, FhirClient, location_id, location_version
from fhir_lupus.client._clock import ServerClock
from fhir_lupus.client._connection import Connection
from fhir_lupus.client._errors import error_class, outcome_text, read_error_body, server_message
from fhir_lupus.client._probe import serves
from fhir_lupus.client._retry import RetryPolicy, RetryTransport, retry_after_seconds
from fhir_lupus.errors import (  # the HTTP part of the error tree, where callers of the client look for it
    AuthenticationRefused,
    FatalHttpError,
    FhirHttpError,
    InvalidResponse,
    Outcome,
    OutcomeIssue,
    PagingLoopError,
    PreconditionFailed,
    TooLarge,
    TransientHttpError,
    UnknownSearchParameter,
    UnsupportedInteraction,
)

__all__ = [
    "FHIR_JSON",
    "NDJSON",
    "AuthenticationRefused",
    "BasicAuth",
    "BearerAuth",
    "Capabilities",
    "Connection",
    "ExportFile",
    "ExportManifest",
    "ExportRequest",
    "ExportStatus",
    "FatalHttpError",
    "FhirClient",
    "FhirHttpError",
    "InvalidResponse",
    "Outcome",
    "OutcomeIssue",
    "PagingLoopError",
    "PreconditionFailed",
    "RetryPolicy",
    "RetryTransport",
    "ServerClock",
    "SmartBackendAuth",
    "TooLarge",
    "TransientHttpError",
    "UnknownSearchParameter",
    "UnsupportedInteraction",
    "Verdict",
    "WriteStrategy",
    "classify",
    "error_class",
    "location_id",
    "location_version",
    "outcome_text",
    "read_error_body",
    "retry_after_seconds",
    "server_message",
    "serves",
]
