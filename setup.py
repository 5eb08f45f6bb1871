"""Packaging beyond what pyproject.toml can say: the wheel carries the repository's top-level mappings/.

mappings/ stays at the top of the repository, where people edit it; at build time setuptools maps it to the
package ``fhir_lupus._mappings``, so a wheel holds it as package data (fhir_lupus/_mappings/**.yaml, and the
SQL-on-FHIR views as **.json) and ``fhir_lupus.terminology.default_mappings_dir`` finds it through
importlib.resources. Every other setting is in pyproject.toml.
"""

from setuptools import find_namespace_packages, find_packages, setup

MAPPINGS = "fhir_lupus._mappings"
mapping_packages = [MAPPINGS, *(f"{MAPPINGS}.{sub}" for sub in find_namespace_packages("mappings"))]

setup(
    packages=[*find_packages(include=["fhir_lupus*"]), *mapping_packages],
    package_dir={MAPPINGS: "mappings"},
    package_data={package: ["*.yaml", "*.json"] for package in mapping_packages},
)
