"""The one type every layer passes around: a FHIR resource as its JSON object (``dict``), not a model.

Mappers build dicts (fast, and the shape the wire and the journal's hashes use); validation turns a dict
into a fhir.resources model only to check it. Defined here, below every package, so bundle, push, pull and
registry name the same type without importing the mappers.
"""

from typing import Any

Resource = dict[str, Any]
