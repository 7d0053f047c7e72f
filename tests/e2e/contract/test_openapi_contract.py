"""/openapi.json is an exact contract, checked by schemathesis against the real server.

Every operation of the document is fuzzed with a signed-in account in every phase of
`schemathesis run` (the examples, the coverage cases the schemas define, generated positive
and negative data, then a stateful run that chains operations through their links), with
every built-in check (`not_a_server_error`, status codes, content types, response schemas and
headers, positive data accepted, negative data refused, auth not ignored, ...). Any finding
fails. The seed is fixed and generation derandomized so CI is reproducible; `make fuzz` runs
the same with a random seed and a larger budget.
"""

from __future__ import annotations

import pytest
import schemathesis

from tests.e2e.contract import fuzzing


def test_server_keeps_its_openapi_document(contract_schema: schemathesis.BaseSchema) -> None:
    report = fuzzing.run(contract_schema)
    print(report.figures())
    if report.findings or report.errors:
        pytest.fail(f"{report.figures()}\n{report.failures()}", pytrace=False)
