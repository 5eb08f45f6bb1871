"""The R4 Subscription watch registers: laboratory Observations, delivered by rest-hook to our endpoint.

One Subscription per study and endpoint, never two: it carries a tag (``meta.tag``, the system
``identifier_systems.watch`` of mappings/project.yaml, the code ``<study>@<endpoint>``), and a registration first
searches by that tag and updates what it finds. A watch that was killed (no removal) and started again takes its
Subscription back instead of adding one, so the server never notifies twice for one change.

The server activates a requested Subscription (``status`` requested -> active) when it can deliver; ``error`` or
``off``, or no activation within the bound, means no notifications: watch then relies on its periodic pull and
says so. Registration and removal go to the audit trail (kind ``subscription``), the shared secret never: the
entry's hash is over the resource with the secret blanked out.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from fhir_lupus.audit import AuditLog, append_run, redact_server
from fhir_lupus.client import Capabilities, FhirClient, classify
from fhir_lupus.errors import FatalHttpError
from fhir_lupus.journal import Journal
from fhir_lupus.settings import Settings
from fhir_lupus.terminology import load_fhir_codes
from fhir_lupus.watch._endpoint import SECRET_HEADER

__all__ = [
    "ACTIVATION_TIMEOUT",
    "Payload",
    "Registration",
    "SubscriptionSpec",
    "register_subscription",
    "remove_subscription",
    "subscription_resource",
    "supports_subscriptions",
]

Payload = Literal["full", "empty"]
FHIR_JSON = "application/fhir+json"
ACTIVATION_TIMEOUT = 60.0  # HAPI activates within a second or two; a busy server gets a minute before we poll
_TAG_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "$": "\\$", "|": "\\|"})  # FHIR search escaping


@dataclass(frozen=True)
class SubscriptionSpec:
    """What to register: the study, where the server delivers (``endpoint``, the public URL), the secret it sends
    back in ``SECRET_HEADER``, and whether a notification carries the Observation (``full``) or nothing."""

    study: str
    endpoint: str
    secret: str
    payload: Payload = "full"


@dataclass(frozen=True)
class Registration:
    """A registered Subscription: its id, whether this run ``created`` it (else updated one found by its tag),
    the status the server last reported, and, when notifications will not come, why (``note``)."""

    id: str
    created: bool
    status: str
    note: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"


def supports_subscriptions(capabilities: Capabilities) -> bool:
    """The server lists Subscription with create, update and a search (the tag search finds ours again)."""
    return all(capabilities.offers("Subscription", i) for i in ("create", "update", "search-type"))


def _tag(spec: SubscriptionSpec, settings: Settings) -> dict[str, str]:
    system = settings.pack.identifier_system("watch", study=spec.study)
    return {"system": system, "code": f"{spec.study}@{spec.endpoint}"}


class _ChannelExtension(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    valueBoolean: bool  # the FHIR element's name


class _WatchMappings(BaseModel):
    """mappings/fhir/watch.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel_extensions: tuple[_ChannelExtension, ...] = ()


def subscription_resource(spec: SubscriptionSpec, settings: Settings) -> dict[str, Any]:
    """The Subscription for ``spec``: laboratory Observations (the category push writes, mappings/fhir/codes.yaml
    ``lab_category``), rest-hook to the endpoint with the secret header, status requested; the channel carries
    the extensions of mappings/fhir/watch.yaml (HAPI's: notify deletions too)."""
    pack = settings.pack
    category = load_fhir_codes(pack).lab_category
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": spec.endpoint,
        "header": [f"{SECRET_HEADER}: {spec.secret}"],
    }
    extensions = pack.load(_WatchMappings, "fhir/watch.yaml").channel_extensions
    if extensions:
        channel["extension"] = [extension.model_dump() for extension in extensions]
    if spec.payload == "full":
        channel["payload"] = FHIR_JSON
    return {
        "resourceType": "Subscription",
        "meta": {"tag": [_tag(spec, settings)]},
        "status": "requested",
        "reason": f"fhir-lupus watch: laboratory results of {spec.study}",
        "criteria": f"Observation?category={pack.system_uri(category.system)}|{category.code}",
        "channel": channel,
    }


def _digest(resource: dict[str, Any]) -> str:
    """SHA-256 of the resource as sent, the secret header blanked: the audit proves what was registered without it."""
    channel = {**resource["channel"], "header": [f"{SECRET_HEADER}: ***"]}
    return hashlib.sha256(orjson.dumps({**resource, "channel": channel}, option=orjson.OPT_SORT_KEYS)).hexdigest()


def register_subscription(
    client: FhirClient,
    journal: Journal,
    spec: SubscriptionSpec,
    *,
    settings: Settings,
    audit_log: AuditLog = None,
    timeout: float = ACTIVATION_TIMEOUT,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Registration:
    """Create the Subscription, or update the one its tag finds (others with the tag are deleted: never two), then
    wait up to ``timeout`` seconds for the server to make it active. Audited, also when it fails."""
    resource = subscription_resource(spec, settings)
    tag = resource["meta"]["tag"][0]
    audit = _auditor(client, journal, spec, settings, audit_log)
    try:
        found = [r["id"] for r in client.search("Subscription", {"_tag": _tag_token(tag)}) if r.get("id")]
        if found:
            client.put(f"Subscription/{found[0]}", {**resource, "id": found[0]})
            for extra in found[1:]:
                _delete(client, extra)
            subscription_id, created = found[0], False
        else:
            subscription_id, created = str(client.create(resource).get("id") or ""), True
            if not subscription_id:
                raise FatalHttpError("the server created the Subscription without saying its id")
    except Exception as exc:
        audit({}, _digest(resource), f"failed: {type(exc).__name__}", {})
        raise
    status, note = _wait_active(client, subscription_id, timeout=timeout, interval=interval, sleep=sleep)
    registration = Registration(subscription_id, created, status, note)
    counts = {"created": int(created), "updated": int(not created), "duplicates_removed": max(len(found) - 1, 0)}
    audit(counts, _digest(resource), "registered", {"subscription": subscription_id, "status": status})
    return registration


def _tag_token(tag: dict[str, str]) -> str:
    return f"{tag['system'].translate(_TAG_ESCAPES)}|{tag['code'].translate(_TAG_ESCAPES)}"


def _wait_active(
    client: FhirClient, subscription_id: str, *, timeout: float, interval: float, sleep: Callable[[float], None]
) -> tuple[str, str | None]:
    """The status once active, error or off, or when ``timeout`` ran out; with a note unless active."""
    deadline = time.monotonic() + timeout
    while True:
        current = client.read("Subscription", subscription_id)
        status = str(current.get("status") or "")
        if status == "active":
            return status, None
        if status in ("error", "off"):
            said = f": {current['error']}" if current.get("error") else ""
            return status, f"the server set the Subscription {status}{said}; relying on the periodic pull"
        if time.monotonic() >= deadline:
            return status, (
                f"the Subscription is still {status or 'without a status'} after {timeout:.0f} s (the server "
                "does not deliver notifications); relying on the periodic pull"
            )
        sleep(interval)


def remove_subscription(
    client: FhirClient,
    journal: Journal,
    spec: SubscriptionSpec,
    registration: Registration,
    *,
    settings: Settings,
    audit_log: AuditLog = None,
) -> None:
    """Delete the Subscription (one already gone is no error); audited."""
    audit = _auditor(client, journal, spec, settings, audit_log)
    digest = _digest(subscription_resource(spec, settings))
    try:
        _delete(client, registration.id)
    except Exception as exc:
        audit({}, digest, f"failed: {type(exc).__name__}", {"subscription": registration.id})
        raise
    audit({"removed": 1}, digest, "removed", {"subscription": registration.id})


def _delete(client: FhirClient, subscription_id: str) -> None:
    try:
        client.delete("Subscription", subscription_id)
    except FatalHttpError as exc:
        if classify(exc.status, exc.outcome) != "not-found":
            raise


def _auditor(
    client: FhirClient, journal: Journal, spec: SubscriptionSpec, settings: Settings, audit_log: AuditLog
) -> Callable[[dict[str, int], str, str, dict[str, str]], None]:
    """One audit entry of kind ``subscription``; details name study, endpoint and payload (never the secret)."""
    run = functools.partial(
        append_run,
        audit_log,
        journal,
        "subscription",
        server=client.base_url,
        mapping_version=settings.pack.project.mapping_version,
    )
    base = {"study": spec.study, "endpoint": redact_server(spec.endpoint), "payload": spec.payload}

    def audit(counts: dict[str, int], digest: str, outcome: str, details: dict[str, str]) -> None:
        run(counts=counts, digest=digest, outcome=outcome, details={**base, **details})

    return audit
