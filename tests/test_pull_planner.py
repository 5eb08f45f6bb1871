"""The planner of the catalogue-code search on its own: group sizes, URL cuts and refusals, no server.

tests/test_pull_passes.py proves the same decisions through whole pulls on the fake server; here each one is
pinned where it is made (``pull._planner``), and the one function that reads HTTP statuses for it
(``pull._search_pass.refusal``).
"""

from __future__ import annotations

import pytest

from fhir_lupus.client import FatalHttpError, TransientHttpError
from fhir_lupus.pull import _planner as planner
from fhir_lupus.pull._planner import Planner, Refusal, Step
from fhir_lupus.pull._search_pass import refusal


def test_groups_grow_while_the_results_are_few_up_to_the_maximum() -> None:
    plan = Planner()
    sizes = [plan.size]
    for _ in range(3):
        plan.searched(plan.size, 0)
        sizes.append(plan.size)
    assert sizes == [1, 8, planner.GROUP_MAX, planner.GROUP_MAX]


def test_dense_results_stop_the_grouping_for_the_rest_of_the_pull() -> None:
    plan = Planner()
    plan.searched(1, 0)
    plan.searched(8, planner.DENSE_PER_SUBJECT * 8 + 1)
    assert (plan.size, plan.grouping) == (1, False)
    plan.searched(1, 0)
    assert plan.size == 1  # no growth once stopped
    steady = Planner()
    steady.searched(8, planner.DENSE_PER_SUBJECT * 8)  # as many as allowed: still growing
    assert steady.grouping and steady.size == 8


def test_a_group_is_cut_before_its_url_passes_the_maximum_and_later_groups_stay_that_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(planner, "MAX_URL", 250)
    plan = Planner()
    parts = list(plan.fitting(list(range(5)), lambda part: 100 * len(part)))
    assert parts == [[0, 1], [2, 3], [4]] and plan.limit == 2
    plan.searched(2, 0)
    assert plan.size == 2  # min(limit, 1 * growth)


@pytest.mark.parametrize(
    ("refused", "subjects", "brought", "step"),
    [
        ("too-long", 8, 0, "halves"),
        ("refused", 8, 0, "one-by-one"),
        ("refused", 1, 0, "by-code"),
        ("too-long", 1, 0, "raise"),  # one subject is as short as it gets
        (None, 8, 0, "raise"),  # another failure is not worked around
        ("refused", 8, 3, "raise"),  # refused after results came: nothing is asked twice
    ],
)
def test_what_a_refused_group_search_leads_to(refused: Refusal | None, subjects: int, brought: int, step: Step) -> None:
    plan = Planner()
    plan.searched(1, 0)  # grouping, next size 8
    assert plan.refused(refused, subjects, brought) == step
    if step == "halves":
        assert plan.limit == subjects // 2 and plan.size == subjects // 2 and plan.grouping
    if step == "one-by-one":
        assert (plan.size, plan.grouping, plan.no_negation) == (1, False, False)
    if step == "by-code":
        assert plan.no_negation
    if step == "raise":
        assert (plan.size, plan.limit, plan.no_negation) == (8, planner.GROUP_MAX, False)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(414, "too-long"), (431, "too-long"), (400, "refused"), (422, "refused"), (404, None), (403, None)],
)
def test_the_statuses_a_group_search_can_work_around(status: int, kind: Refusal | None) -> None:
    assert refusal(FatalHttpError("no", status=status)) == kind
    assert refusal(TransientHttpError("overloaded", status=503)) is None
