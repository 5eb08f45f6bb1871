"""How the catalogue-code search of a pull is cut into requests: pure decisions, no I/O, tested on their own.

The search pass (``_search_pass``) asks ``code=<catalogue list>&category:not=laboratory`` for groups of subjects
at once (``patient=Patient/a,Patient/b,...``). The ``Planner`` decides how many subjects share the next search,
where a group is cut so that its URL stays under MAX_URL (HAPI's Jetty and node's http refuse a request line
past 8 and 16 KiB), and what the pass does when the server refuses a group search (``Step``). What a refusal
is (a request too long, or a list of patients or ``:not`` the server does not take) is read from the HTTP
status by the search pass, in one small function, and handed here as a ``Refusal``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypeVar

__all__ = ["DENSE_PER_SUBJECT", "GROUP_GROWTH", "GROUP_MAX", "MAX_URL", "Planner", "Refusal", "Step"]

# At most GROUP_MAX patients a search, the group growing GROUP_GROWTH-fold while it brings at most
# DENSE_PER_SUBJECT results a subject, and the URL under MAX_URL characters.
GROUP_MAX = 40
GROUP_GROWTH = 8
DENSE_PER_SUBJECT = 2
MAX_URL = 6000

Refusal = Literal["too-long", "refused"]  # the request line is too long; the list of patients or :not is refused
# What the pass does after a refused group search: raise the error, ask the two halves of the group, ask its
# subjects one at a time, or (a single subject refused) ask by code alone, without ``category:not``.
Step = Literal["raise", "halves", "one-by-one", "by-code"]
T = TypeVar("T")


class Planner:
    """How many subjects share the next catalogue-code search, and what a refusal changes.

    The first subject is searched alone: if its search brings next to nothing (today's data: nothing), the next
    groups grow (1, 8, 40); a group that brings more than ``DENSE_PER_SUBJECT`` results a subject stops the
    grouping for the rest of the pull. Such results are best asked subject by subject: HAPI 8.8 (H2) answers a
    search by a list of patients in about 10 ms a result, twenty times its rate for one patient.
    """

    def __init__(self) -> None:
        self.size = 1  # subjects in the next group
        self.limit = GROUP_MAX  # never more than this (lowered by a URL too long)
        self.grouping = True
        # the server refused ``category:not``: labs with a catalogue code are then searched by code alone
        self.no_negation = False

    def searched(self, subjects: int, results: int) -> None:
        """A group search of ``subjects`` brought ``results``: the next group grows, or the grouping stops."""
        if results > DENSE_PER_SUBJECT * subjects:
            self.stop()
        elif self.grouping:
            self.size = min(self.limit, self.size * GROUP_GROWTH)

    def stop(self) -> None:
        self.grouping = False
        self.size = 1

    def shorten(self, subjects: int) -> None:
        """A group of ``subjects`` made the request too long for the server: at most half as many from now on."""
        self.limit = max(1, subjects // 2)
        self.size = min(self.size, self.limit)

    def fitting(self, members: Sequence[T], url_length: Callable[[list[T]], int]) -> Iterator[list[T]]:
        """``members`` cut so that each group search's URL (``url_length`` of the group) stays under MAX_URL."""
        part: list[T] = []
        for member in members:
            if part and url_length([*part, member]) > MAX_URL:
                self.limit = min(self.limit, len(part))
                yield part
                part = []
            part.append(member)
        if part:
            yield part

    def refused(self, refusal: Refusal | None, subjects: int, brought: int) -> Step:
        """The next step after a group search of ``subjects`` failed with ``refusal`` (None: another error) when
        it had brought ``brought`` results. Only a refusal before any result is worked around."""
        if brought or refusal is None:
            return "raise"
        if subjects > 1 and refusal == "too-long":
            self.shorten(subjects)
            return "halves"
        if subjects > 1:  # a list of patients refused (or category:not): one subject at a time from now on
            self.stop()
            return "one-by-one"
        if refusal == "too-long":
            return "raise"
        # a server that lists category but refuses its :not modifier: ask by code alone, as before
        self.no_negation = True
        return "by-code"
