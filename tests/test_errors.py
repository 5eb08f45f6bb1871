"""The error tree: drawn whole in fhir_lupus/errors.py, one classify for what a status means, the parsed
OperationOutcome every HTTP error carries, and the one table of exit codes."""

from __future__ import annotations

import re
from typing import Any, get_args

import httpx
import pytest
import respx

from fhir_lupus import errors
from fhir_lupus.cli._exit import EXIT_CODES, OTHER_ERROR, RESULT_CODES, Result, exit_code
from fhir_lupus.client import (
    FhirClient,
    Outcome,
    OutcomeIssue,
    RetryPolicy,
    Verdict,
    classify,
    error_class,
    outcome_text,
    read_error_body,
)

BASE = "https://fhir.test/r4"


def tree() -> set[type[errors.FhirLupusError]]:
    """FhirLupusError and every class below it that the library defines (not the tests' own)."""
    found: set[type[errors.FhirLupusError]] = set()
    todo = [errors.FhirLupusError]
    while todo:
        kind = todo.pop()
        if kind.__module__.startswith("fhir_lupus") and kind not in found:
            found.add(kind)
            todo.extend(kind.__subclasses__())
    return found


def drawn() -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """The drawing of errors.py's docstring: each name with its parent and the builtins drawn after it."""
    lines = (errors.__doc__ or "").split("\n\n")[1].splitlines()
    columns: dict[int, str] = {}  # where each name starts -> the name, for its children's "+--"
    result: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for line in lines:
        match = re.match(r"^(?P<lead>[\s|]*)(?P<plus>\+-- )?(?P<name>\w+)(?:\((?P<bases>[\w, ]+)\))?", line)
        assert match, line
        start = match.start("name")
        parent = columns.get(match.start("plus") - 1) if match["plus"] else None
        bases = tuple(b.strip() for b in match["bases"].split(",")) if match["bases"] else ()
        result[match["name"]] = (parent, bases)
        columns[start] = match["name"]
    return result


class TestTheTree:
    def test_the_drawing_lists_exactly_the_classes_with_their_parents(self) -> None:
        drawing = drawn()
        assert set(drawing) == {kind.__name__ for kind in tree()}
        for kind in tree():
            parent, builtins = drawing[kind.__name__]
            in_tree = [b.__name__ for b in kind.__bases__ if issubclass(b, errors.FhirLupusError)]
            assert ([parent] if parent else []) == in_tree, kind
            assert builtins == tuple(b.__name__ for b in kind.__bases__ if not issubclass(b, errors.FhirLupusError))

    def test_every_class_is_defined_in_errors_py_and_exported(self) -> None:
        for kind in tree():
            assert kind.__module__ == "fhir_lupus.errors", kind
            assert kind.__name__ in errors.__all__

    def test_old_import_paths_give_the_same_classes(self) -> None:
        from fhir_lupus import client, devserver, registry, spark
        from fhir_lupus.pull._bulk import BulkExportError
        from fhir_lupus.pull._local import NdjsonError
        from fhir_lupus.push._lookup import RouteRefused

        assert BulkExportError is errors.BulkExportError and NdjsonError is errors.NdjsonError
        assert RouteRefused is errors.RouteRefused and devserver.CheckoutMissing is errors.CheckoutMissing
        assert registry.DeidentificationError is errors.DeidentificationError
        assert registry.RegistryConfigError is errors.RegistryConfigError
        assert spark.SparkUnavailable is errors.SparkUnavailable
        assert client.AuthenticationRefused is errors.AuthenticationRefused

    def test_checkout_missing_is_still_a_runtime_error(self) -> None:
        assert issubclass(errors.CheckoutMissing, RuntimeError)


class TestClassify:
    @pytest.mark.parametrize(
        ("status", "verdict"),
        [
            (None, "fatal"),
            (200, "ok"),
            (201, "ok"),
            (304, "ok"),
            *[(status, "transient") for status in (408, 429, 500, 502, 503, 504)],
            (400, "refused"),
            (422, "refused"),
            (409, "conflict"),
            (412, "multiple-matches"),
            (413, "too-large"),
            (414, "too-long"),
            (431, "too-long"),
            (404, "not-found"),
            (410, "not-found"),
            (401, "auth-refused"),
            (403, "forbidden"),
            (405, "fatal"),
            (501, "fatal"),
        ],
    )
    def test_the_status_alone(self, status: int | None, verdict: Verdict) -> None:
        assert classify(status) == verdict
        assert classify(status, Outcome()) == verdict  # an outcome without issues says nothing more

    @pytest.mark.parametrize(
        ("status", "words", "verdict"),
        [
            (400, "Conditional PUT matched multiple resources", "multiple-matches"),
            (409, "the search matched 2 resources", "multiple-matches"),
            (422, "multiple matches", "multiple-matches"),
            (412, "anything", "multiple-matches"),
            (400, "Transaction contains more update operations than allowed", "too-large"),
            (422, "Bundle contains 600 entries, which exceeds the maximum of 500", "too-large"),
            (409, "too many entries", "conflict"),  # a 409 is never about size
            (400, 'HAPI-0524: Unknown search parameter "url"', "unsupported"),
            (422, "Unknown search parameter", "refused"),  # only a 400 says that
            (400, "Observation.status: Missing required property", "refused"),
            (503, "matched multiple resources", "transient"),  # words never make a transient answer final
            (404, "too many entries", "not-found"),
        ],
    )
    def test_the_words_refine_400_409_422(self, status: int, words: str, verdict: Verdict) -> None:
        assert classify(status, words) == verdict
        issue = OutcomeIssue(diagnostics=words)
        assert classify(status, Outcome((issue,))) == verdict

    @pytest.mark.parametrize(
        ("verdict", "expected"),
        [
            ("transient", "TransientHttpError"),
            ("multiple-matches", "PreconditionFailed"),
            ("too-large", "TooLarge"),
            ("unsupported", "UnknownSearchParameter"),
        ],
    )
    def test_error_class_follows_the_verdict(self, verdict: Verdict, expected: str) -> None:
        words = {"multiple-matches": "matched multiple resources", "unsupported": "unknown search parameter"}
        status = {"transient": 503, "multiple-matches": 400, "too-large": 413, "unsupported": 400}[verdict]
        assert classify(status, words.get(verdict)) == verdict
        assert error_class(status, words.get(verdict)).__name__ == expected

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 414, 422, 431, 501])
    def test_every_other_error_status_is_a_fatal_http_error(self, status: int) -> None:
        assert error_class(status) is errors.FatalHttpError


def issue(**fields: Any) -> dict[str, Any]:
    return {"severity": "error", "code": "invalid", **fields}


class TestOperationOutcome:
    def test_every_field_of_an_issue(self) -> None:
        parsed = Outcome.from_json(
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    issue(details={"text": "bad unit"}, diagnostics="stack trace", expression=["Observation.value"]),
                    {"severity": "warning", "code": "informational", "diagnostics": "note"},
                ],
            }
        )
        assert parsed.issues == (
            OutcomeIssue("error", "invalid", "stack trace", "bad unit", ("Observation.value",)),
            OutcomeIssue("warning", "informational", "note"),
        )
        assert parsed.text == "error: bad unit (at Observation.value); warning: note"

    def test_missing_fields_fall_back_as_the_message_always_did(self) -> None:
        assert OutcomeIssue.from_json({}) == OutcomeIssue()
        assert OutcomeIssue.from_json({}).text == "error: "
        assert OutcomeIssue.from_json({"code": "not-found"}).text == "error: not-found"  # no words: the code
        located = OutcomeIssue.from_json(issue(diagnostics="x", location=["Bundle.entry[2]"]))
        assert located.expression == ("Bundle.entry[2]",) and located.text == "error: x (at Bundle.entry[2])"

    def test_malformed_parts_are_left_out(self) -> None:
        assert Outcome.from_json({"resourceType": "OperationOutcome"}).text == "OperationOutcome without issues"
        assert Outcome.from_json({"issue": {"severity": "error"}}).issues == ()
        assert Outcome.from_json({"issue": ["text", issue(diagnostics="kept")]}).text == "error: kept"
        odd = OutcomeIssue.from_json(issue(details="not an object", expression="Patient.name", diagnostics=3))
        assert (odd.details, odd.expression, odd.diagnostics) == ("", ("Patient.name",), "3")

    def test_outcome_text_is_the_outcome_parsed(self) -> None:
        document = {"resourceType": "OperationOutcome", "issue": [issue(diagnostics="refused")]}
        assert outcome_text(document) == Outcome.from_json(document).text == "error: refused"

    def test_an_error_body_is_read_once_into_its_message_and_outcome(self) -> None:
        body = b'{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "no"}]}'
        assert read_error_body(body) == ("error: no", Outcome((OutcomeIssue(diagnostics="no"),)))
        assert read_error_body(b"<html>Bad Gateway</html>") == ("<html>Bad Gateway</html>", None)
        assert read_error_body(b"") == ("(empty body)", None)
        assert read_error_body(b"\xff\xfe not utf-8")[1] is None
        assert read_error_body(b'{"error": "invalid_client", "error_description": "unknown key"}') == (
            "unknown key",
            None,
        )
        assert read_error_body(b'["a list"]') == ('["a list"]', None)

    @respx.mock
    def test_every_http_error_carries_the_outcome_the_server_sent(self) -> None:
        client = FhirClient(BASE, retry=RetryPolicy(attempts=1), transport=httpx.HTTPTransport())
        refused = {"resourceType": "OperationOutcome", "issue": [issue(diagnostics="no", expression=["Patient.id"])]}
        respx.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(422, json=refused))
        respx.get(f"{BASE}/Patient/2").mock(return_value=httpx.Response(404, text="not here"))
        with pytest.raises(errors.FatalHttpError) as caught:
            client.read("Patient", "1")
        assert caught.value.outcome == Outcome((OutcomeIssue("error", "invalid", "no", "", ("Patient.id",)),))
        assert str(caught.value).endswith("-> 422: error: no (at Patient.id)")  # the message as it was
        with pytest.raises(errors.FatalHttpError) as caught:
            client.read("Patient", "2")
        assert caught.value.outcome is None and str(caught.value).endswith("-> 404: not here")

    def test_the_outcome_is_frozen(self) -> None:
        with pytest.raises(AttributeError):
            Outcome().issues = ()  # type: ignore[misc]


class TestExitCodes:
    def test_the_table_lists_every_class_of_the_tree(self) -> None:
        assert set(EXIT_CODES) == tree()

    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (errors.AuthenticationRefused("refused"), 4),
            # issue 22 redefined these: a server or network failure is 6, no longer 1 (or 2)
            (errors.FhirHttpError("x"), 6),
            (errors.TransientHttpError("x"), 6),
            (errors.TooLarge("x"), 6),
            (errors.InvalidResponse("x"), 6),
            (errors.UnsupportedInteraction("x"), 6),
            (errors.BulkExportError("x"), 6),
            (errors.RouteRefused("Patient", "identifier", "x"), 6),
            (errors.RejectedRows(3), 1),
            (errors.FhirLupusError("x"), 2),
            (errors.MappingError("x"), 2),
            (errors.InputError("f.csv", 2, "unit", "x"), 2),
            (errors.CheckoutMissing("x"), 2),
            (errors.SparkUnavailable("x"), 2),
            (errors.CoreUnavailable("x"), 2),
            (ValueError("--smart-alg must be RS384 or ES384"), 2),
            (OSError("x"), 2),
        ],
    )
    def test_todays_codes(self, error: Exception, code: int) -> None:
        assert exit_code(error) == code

    def test_a_subclass_takes_its_nearest_listed_class(self) -> None:
        class Refused(errors.AuthenticationRefused):
            pass

        assert exit_code(Refused("x")) == 4 and exit_code(KeyError("x")) == OTHER_ERROR

    @pytest.mark.parametrize(
        ("result", "code"),
        [
            ("rows-rejected", 1),
            ("push-incomplete", 5),  # issue 22: an incomplete write is 5, no longer 1
            ("package-invalid", 1),
            ("round-trip-different", 1),
            ("audit-tampered", 1),
            ("audit-torn", 3),
        ],
    )
    def test_results_of_commands_that_ran_to_their_end(self, result: Result, code: int) -> None:
        assert set(RESULT_CODES) == set(get_args(Result))
        assert RESULT_CODES[result] == code
