"""``python -m fhir_lupus.cli``: the same command as the ``fhir-lupus`` script."""

from fhir_lupus.cli import main

main()
