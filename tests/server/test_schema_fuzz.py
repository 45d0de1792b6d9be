"""Property-based fuzzing with schemathesis: TGI's OpenAPI spec and the server's own /openapi.json.

Every operation of both specs gets generated requests, valid and invalid (schemathesis' positive and negative
modes), sent to a real server. The contract: no 5xx ever, no request hangs (each one has a timeout), and every
4xx carries TGI's error body ``{"error": str, "error_type": str}``.

Bounded so that the whole module takes about two minutes on a 2-core machine: a fixed number of cases per
operation and mode, derandomized (the same cases every run, so a failure reproduces), no shrinking, and short
generations. The server runs with small MAX_TOTAL_TOKENS and MAX_BEST_OF, so large lengths and choice counts
are cheap 422s, and each case's body is edited before it is sent (:func:`_short`) so that an accepted request
decodes a couple of tokens only.

Uses schemathesis' strategies (``APIOperation.as_strategy``) under Hypothesis' ``@given`` rather than its
pytest integration: ``schemathesis.pytest.from_fixture`` reads and sets ``Node._nodeid``, which pytest 9.2 no longer has.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

# Cases per operation and generation mode (positive: valid per the spec; negative: invalid).
MAX_EXAMPLES = 12
# Seconds one request may take; a hang fails the case instead of the whole run.
REQUEST_TIMEOUT = 60
# The fuzz server's limits: a fuzzed length above them is a 422, below them it is capped to CAP_NEW_TOKENS.
MAX_TOTAL_TOKENS = 96
MAX_BEST_OF = 2
CAP_NEW_TOKENS = 2
# The fields that decide how many tokens a request decodes, in TGI's and OpenAI's spellings.
LENGTH_FIELDS = ("max_new_tokens", "max_tokens", "max_completion_tokens")
ROLES = ("system", "user", "assistant", "tool", "developer")


@pytest.fixture(scope="module")
def fuzz_server(start_server):
    return start_server(max_total_tokens=MAX_TOTAL_TOKENS, max_best_of=MAX_BEST_OF)


def _short(node: Any) -> Any:
    """Cap every accepted length (and `n`) in a body, at any depth (TGI nests them in `parameters`).

    Values the server rejects (<= 0, above its limits, not integers) are left as fuzzed: those are the 422
    paths under test. An absent (or null) length means the default, up to filling the context, so a
    generating body without one gets a short one (the default-length path is tests/server/test_tgi_routes.py's).
    """
    if isinstance(node, list):
        return [_short(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if isinstance(value, int) and not isinstance(value, bool):
            if key in LENGTH_FIELDS and 0 < value <= MAX_TOTAL_TOKENS:
                value = min(value, CAP_NEW_TOKENS)
            elif key == "n" and 0 < value <= MAX_BEST_OF:
                value = 1
        out[key] = _short(value)
    messages = out.get("messages")
    if isinstance(messages, list):
        # A fuzzed role is almost never one of the five, and that 422 would end every chat case before the
        # chat template, tools and generation are reached; keep the rest of each message as fuzzed.
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("role"), str) and message["role"] not in ROLES:
                message["role"] = "user"
    if "inputs" in out:
        target, field = out.setdefault("parameters", {}), "max_new_tokens"
    elif "messages" in out or "prompt" in out:
        target, field = out, "max_tokens"
    else:
        return out
    if isinstance(target, dict) and all(target.get(f) is None for f in LENGTH_FIELDS):
        target[field] = CAP_NEW_TOKENS
    return out


def _as_openapi_30(node: Any) -> Any:
    """TGI's spec says ``openapi: 3.0.3`` yet writes bounds the 3.1 way (``"exclusiveMinimum": 0``, a number),
    which schemathesis rejects as unsupported; spell them as 3.0 does (``minimum: 0, exclusiveMinimum: true``)."""
    if isinstance(node, list):
        return [_as_openapi_30(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _as_openapi_30(v) for k, v in node.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            node[bound], node[exclusive] = value, True
    return node


def _config(base_url: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({"base-url": base_url, "request-timeout": REQUEST_TIMEOUT})


def _check(case, statuses: Counter) -> None:
    body = case.body
    if isinstance(body, (dict, list)):
        case.body = _short(body)
    response = case.call(timeout=REQUEST_TIMEOUT)
    statuses[response.status_code] += 1
    where = f"{case.as_curl_command()[:3000]}\n-> {response.status_code} {response.content[:500]!r}"
    assert response.status_code < 500, f"server error: {where}"
    # schemathesis stops reading an event stream at the timeout (or a cap on events) instead of failing.
    assert not response.stream_cut_short, f"an event stream that did not end within {REQUEST_TIMEOUT} s: {where}"
    if 400 <= response.status_code < 500:
        try:
            error = json.loads(response.content)
        except ValueError:
            raise AssertionError(f"a {response.status_code} whose body is not JSON: {where}") from None
        assert isinstance(error, dict) and isinstance(error.get("error"), str) and isinstance(error.get("error_type"), str), (
            f"a {response.status_code} without TGI's error body {{error, error_type}}: {where}"
        )


def _fuzz(schema) -> None:
    """Every operation, positive and negative cases; all failures reported together, one per operation and mode."""
    failures, tally = [], {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the spec has no operations"
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            statuses = tally.setdefault(f"{operation.label} ({mode.value})", Counter())

            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,  # the same cases every run: a failure reproduces
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure costs no extra requests
                suppress_health_check=list(HealthCheck),
            )
            @given(operation.as_strategy(generation_mode=mode))
            def run(case):
                _check(case, statuses)

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid: an operation without parameters or body has no negative cases.
                assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no positive case could be generated"
            except Exception as exc:  # an assertion above, or the request itself failing (a timeout is a hang)
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}")
    # Shown with -rP (or on failure): which statuses each operation's cases got.
    for label, statuses in tally.items():
        print(f"{label}: {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)


def test_tgi_spec_fuzz_finds_no_server_error(fuzz_server, openapi_spec):
    """TGI's own spec, its paths applied to this server."""
    _fuzz(schemathesis.openapi.from_dict(_as_openapi_30(openapi_spec), config=_config(fuzz_server.url)))


def test_own_openapi_fuzz_finds_no_server_error(fuzz_server):
    _fuzz(schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", config=_config(fuzz_server.url)))
