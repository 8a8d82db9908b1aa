"""Schemathesis against the collector's own ``/openapi.json``: no input, valid or not, gets a 5xx.

Every answer must also be one the document declares (status, content type,
body schema). About a hundred generated requests in all, valid and invalid.
Cases come from Schemathesis' strategies run by Hypothesis directly (its
pytest plugin reaches into pytest internals that pytest 9 no longer has).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (dev extra)")

from collector_helpers import Server  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Per operation: six operations (not the document itself) get valid input; the three that take input get
# invalid input too. About a hundred requests in all.
EXAMPLES = {"positive": 20, "negative": 16}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_makes_a_server_error(serve: Callable[..., Server], mode: str) -> None:
    server = serve()
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /api/v1/telemetry", "POST /tevents", "GET /api/v1/stats"}
    if mode == "negative":  # only input can be invalid
        operations = [op for op in operations if len(op.body) + len(op.query) + len(op.headers)]
    calls = 0
    for operation in operations:
        @given(operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=server.url, timeout=30, checks=CHECKS)

        run()
    print(f"\n{mode} input: {calls} requests")
    assert calls >= 40
    assert server.request("GET", "/healthz").status == 200  # and nothing broke the server


DEEP = b"[" * 10_000 + b"]" * 10_000
# Bodies no generator makes: 10,000 levels deep in every place a value goes, and invalid UTF-8 in a string.
HOSTILE = {
    "POST /api/v1/telemetry": [
        b'{"events":[{"type":"x","metadata":{"a":' + DEEP + b"}}]}",
        b'{"events":[{"type":"x","unknown":' + DEEP + b"}]}",
        b'{"events":[{"type":"x"}],"unknown":' + DEEP + b"}",
        b'{"events":[' + DEEP + b"]}",
        DEEP,
        b'{"events":[{"type":"command_complete","command":"\xc3\x28"}]}',
        b'{"events":[{"type":"x"}],"os":"\xc3\x28"}',
        b'{"events":[{}]}',
    ],
    "POST /tevents": [
        b'{"clientid":"c","events":[{"event":"x","props":' + DEEP + b"}]}",
        b'{"clientid":"c","events":[' + DEEP + b"]}",
        b'{"clientid":"c","unknown":' + DEEP + b"}",
        b'{"clientid":"c","events":[{"event":"\xc3\x28"}]}',
    ],
}


def test_hostile_bodies_make_no_server_error(serve: Callable[..., Server]) -> None:
    server = serve()
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    for label, bodies in HOSTILE.items():
        for body in bodies:
            case = operations[label].Case(body=body, media_type="application/json")
            response = case.call(base_url=server.url, timeout=30)
            assert response.status_code < 500 and response.headers["content-type"] == ["application/json"]
            case.validate_response(response, checks=CHECKS)
    assert server.request("GET", "/healthz").status == 200
