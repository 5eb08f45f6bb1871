"""The notification endpoint, asked with real httpx requests on loopback: what it refuses (401 without or with a
wrong secret, 413, 404, 405, 400) and where an accepted notification goes (one subject, or everyone)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from fhir_lupus.watch import DEFAULT_PATH, MAX_BODY, SECRET_HEADER, NotificationEndpoint, Work, WorkQueue, parse_listen

SECRET = "s3cret-for-the-endpoint"
OK = {SECRET_HEADER: SECRET}


@pytest.fixture
def queue() -> WorkQueue:
    return WorkQueue()


@pytest.fixture
def endpoint(queue: WorkQueue) -> Iterator[NotificationEndpoint]:
    with NotificationEndpoint(queue, secret=SECRET) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def observation(subject: str) -> dict[str, object]:
    return {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": subject}}


def _refusals(caplog: pytest.LogCaptureFixture, why: str) -> int:
    """The endpoint's 401 warnings saying ``why`` (the words, not "secret": the log redaction may hide that word
    once an earlier test used it as a credential)."""
    return sum(
        1
        for r in caplog.records
        if r.name.startswith("fhir_lupus.watch") and r.levelno == logging.WARNING and "401" in r.getMessage()
        if why in r.getMessage()
    )


def test_it_listens_on_loopback_by_default(endpoint: NotificationEndpoint) -> None:
    assert endpoint.address[0] == "127.0.0.1"
    assert endpoint.url.endswith(DEFAULT_PATH)


class TestRefusals:
    def test_without_the_secret_401_and_a_log_line(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="fhir_lupus"):
            answer = http.post(endpoint.url)
        assert answer.status_code == 401
        assert _refusals(caplog, "without") == 1
        assert queue.get(timeout=0) is None

    def test_with_a_wrong_secret_401(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="fhir_lupus"):
            answer = http.put(
                f"{endpoint.url}/Observation/o1", headers={SECRET_HEADER: SECRET + "x"}, json=observation("Patient/p1")
            )
        assert answer.status_code == 401
        assert _refusals(caplog, "wrong") == 1
        assert SECRET not in caplog.text
        assert queue.get(timeout=0) is None

    def test_a_body_over_the_bound_413(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client
    ) -> None:
        answer = http.post(endpoint.url, headers=OK, content=b" " * (MAX_BODY + 1))
        assert answer.status_code == 413
        assert queue.get(timeout=0) is None

    def test_a_body_at_the_bound_is_read(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client
    ) -> None:
        answer = http.post(endpoint.url, headers=OK, content=b" " * MAX_BODY)
        assert answer.status_code == 200

    @pytest.mark.parametrize("path", ["/", "/elsewhere", f"{DEFAULT_PATH}/Patient/p1", f"{DEFAULT_PATH}/Observation"])
    def test_other_paths_404(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client, path: str
    ) -> None:
        host, port = endpoint.address
        assert http.post(f"http://{host}:{port}{path}", headers=OK).status_code == 404
        assert queue.get(timeout=0) is None

    def test_other_methods_405(self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client) -> None:
        assert http.get(endpoint.url, headers=OK).status_code == 405
        assert http.put(endpoint.url, headers=OK, json={}).status_code == 405
        assert http.get(f"{endpoint.url}/Observation/o1", headers=OK).status_code == 405
        assert queue.get(timeout=0) is None

    def test_a_body_that_is_no_observation_400(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client
    ) -> None:
        url = f"{endpoint.url}/Observation/o1"
        assert http.put(url, headers=OK, content=b"{not json").status_code == 400
        assert http.put(url, headers=OK, json={"resourceType": "Patient", "id": "p1"}).status_code == 400
        assert queue.get(timeout=0) is None


class TestAccepted:
    def test_an_empty_notification_pulls_everyone(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client
    ) -> None:
        assert http.post(endpoint.url, headers=OK).status_code == 200
        assert queue.get(timeout=1) == Work(None, 1)

    @pytest.mark.parametrize("reference", ["Patient/p1", "http://127.0.0.1:9/fhir/Patient/p1", "Patient/p1/_history/4"])
    def test_an_observation_pulls_its_subject_only(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client, reference: str
    ) -> None:
        answer = http.put(f"{endpoint.url}/Observation/o1", headers=OK, json=observation(reference))
        assert answer.status_code == 200
        assert queue.get(timeout=1) == Work(frozenset({"p1"}), 1)

    def test_posted_observations_of_two_subjects_coalesce(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client
    ) -> None:
        for subject in ("Patient/p1", "Patient/p2", "Patient/p1"):
            assert http.post(f"{endpoint.url}/Observation/o1", headers=OK, json=observation(subject)).status_code == 200
        assert queue.get(timeout=1) == Work(frozenset({"p1", "p2"}), 3)

    def test_a_deletion_pulls_everyone(
        self, endpoint: NotificationEndpoint, queue: WorkQueue, http: httpx.Client
    ) -> None:
        assert http.delete(f"{endpoint.url}/Observation/o1", headers=OK).status_code == 200
        assert queue.get(timeout=1) == Work(None, 1)

    def test_the_public_urls_path_is_served(self, queue: WorkQueue, http: httpx.Client) -> None:
        with NotificationEndpoint(queue, secret=SECRET, path="/hooks/lupus") as running:
            assert running.url.endswith("/hooks/lupus")
            assert http.post(running.url, headers=OK).status_code == 200
        assert queue.get(timeout=1) == Work(None, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8765", ("127.0.0.1", 8765)), ("[::1]:80", ("::1", 80)), ("0.0.0.0:0", ("0.0.0.0", 0))],
)
def test_listen_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8765", "localhost", ":80", "host:http", "host:70000"])
def test_a_listen_without_host_and_port_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(value)
