"""Callback signatures: the header format, a fixed vector, and everything a receiver must refuse."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from countersign.callbacks.signing import signature_header, signature_v1, verify_signature

SECRET = "whsec_test-secret"
BODY = b'{"id":"req_01","status":"approved"}'
T = 1_795_000_000


def test_header_is_t_and_v1_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature_header(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_fixed_vector() -> None:
    # printf '1795000000.{"id":"req_01","status":"approved"}' |
    #   openssl dgst -sha256 -hmac whsec_test-secret
    assert signature_v1(SECRET, BODY, T) == (
        "216c4158f54ddafb6e2fe9dca45f9b553b6d8f9599108ec6035469794c044866"
    )


def test_round_trip() -> None:
    assert verify_signature(SECRET, signature_header(SECRET, BODY, T), BODY, now=T)


def test_any_of_several_v1_values_is_enough() -> None:
    old = signature_v1("whsec_old", BODY, T)
    new = signature_v1(SECRET, BODY, T)
    assert verify_signature(SECRET, f"t={T},v1={old},v1={new}", BODY, now=T)
    assert verify_signature(SECRET, f"t={T}, v1={new}, v0=ignored", BODY, now=T)


@pytest.mark.parametrize(
    ("now", "ok"),
    [(T, True), (T + 300, True), (T + 301, False), (T - 300, True), (T - 301, False)],
)
def test_timestamp_tolerance(now: int, ok: bool) -> None:
    assert verify_signature(SECRET, signature_header(SECRET, BODY, T), BODY, now=now) is ok


def test_tolerance_is_adjustable() -> None:
    header = signature_header(SECRET, BODY, T)
    assert verify_signature(SECRET, header, BODY, now=T + 60, tolerance=60)
    assert not verify_signature(SECRET, header, BODY, now=T + 61, tolerance=60)


def test_other_body_secret_or_time_fails() -> None:
    header = signature_header(SECRET, BODY, T)
    assert not verify_signature(SECRET, header, BODY + b" ", now=T)
    assert not verify_signature("whsec_other", header, BODY, now=T)
    v1 = header.split("v1=")[1]
    # The same HMAC moved to another timestamp no longer matches.
    assert not verify_signature(SECRET, f"t={T + 1},v1={v1}", BODY, now=T)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={T}",  # no signature
        f"v1={signature_v1(SECRET, BODY, T)}",  # no timestamp
        f"t=abc,v1={signature_v1(SECRET, BODY, T)}",
        f"t=-{T},v1={signature_v1(SECRET, BODY, T)}",
        f"t={T},t={T},v1={signature_v1(SECRET, BODY, T)}",  # two timestamps
        f"t={T},v1",
        f"t=١٢٣,v1={signature_v1(SECRET, BODY, T)}",  # non-ASCII digits
        f"t={T},v1={signature_v1(SECRET, BODY, T).upper()}",
        f"t={T},v1=é",
    ],
)
def test_malformed_headers_fail(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY, now=T)
