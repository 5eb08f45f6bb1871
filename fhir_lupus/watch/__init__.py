"""``fhir-lupus watch``: lab results pulled as they happen, by R4 rest-hook Subscription and a periodic pull.

``watch`` runs it: a local endpoint (``NotificationEndpoint``) takes the server's notifications (each checked for
the shared secret), the coalescer (``WorkQueue``) turns a flood of them into one pull per subject at a time, and
one worker runs the injected pull (and signals) for them. ``register_subscription`` / ``remove_subscription``
manage the one tagged Subscription per study and endpoint.
"""

from fhir_lupus.watch._coalesce import Pending, Work, WorkQueue
from fhir_lupus.watch._endpoint import DEFAULT_PATH, MAX_BODY, SECRET_HEADER, NotificationEndpoint, parse_listen
from fhir_lupus.watch._loop import FALLBACK_POLL, WatchOptions, WatchReport, Worker, watch
from fhir_lupus.watch._subscription import (
    ACTIVATION_TIMEOUT,
    Payload,
    Registration,
    SubscriptionSpec,
    register_subscription,
    remove_subscription,
    subscription_resource,
    supports_subscriptions,
)

__all__ = [
    "ACTIVATION_TIMEOUT",
    "DEFAULT_PATH",
    "FALLBACK_POLL",
    "MAX_BODY",
    "SECRET_HEADER",
    "NotificationEndpoint",
    "Payload",
    "Pending",
    "Registration",
    "SubscriptionSpec",
    "WatchOptions",
    "WatchReport",
    "Work",
    "WorkQueue",
    "Worker",
    "parse_listen",
    "register_subscription",
    "remove_subscription",
    "subscription_resource",
    "supports_subscriptions",
    "watch",
]
