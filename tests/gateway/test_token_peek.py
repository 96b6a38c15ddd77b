"""The cheap reading of a user token's issuer (``auth._peek``) against PyJWT's: the same issuer or the same
refusal for any token, so the storm's one-decode path refuses exactly what the three-decode path refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import errors
from tidings.auth import ALGORITHM, APP_NAME_RE, _decoded, _peek, _peek_with_pyjwt, _unverified_issuer
from tidings.errors import AuthError


def reference_issuer(token: str) -> str:
    """The issuer check as it was before the cheap reading: PyJWT reads the header, then the claims."""
    if token.startswith("tdk_"):
        raise AuthError("api key", reason=errors.WRONG_CREDENTIAL_KIND)
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError("malformed", reason=errors.MALFORMED_TOKEN) from exc
    if header.get("alg") != ALGORITHM:
        raise AuthError("alg", reason=errors.ALGORITHM_NOT_ALLOWED)
    issuer = claims.get("iss")
    if issuer is None:
        raise AuthError("no iss", reason=errors.MISSING_CLAIM)
    if not isinstance(issuer, str) or not APP_NAME_RE.fullmatch(issuer):
        raise AuthError("bad iss", reason=errors.UNKNOWN_ISSUER)
    return issuer


def outcome(check: Any, token: str) -> tuple[str, str | None]:
    try:
        return "issuer", check(token)
    except AuthError as exc:
        return "refused", exc.reason


def b64(data: bytes, pad: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data).decode()
    return encoded if pad else encoded.rstrip("=")


def part(obj: object) -> str:
    return b64(json.dumps(obj).encode())


GOOD = jwt.encode(
    {"iss": "acme", "sub": "alice", "aud": "tidings", "exp": 2**31}, "k" * 32, algorithm="HS256"
)
HEADER, CLAIMS, SIG = GOOD.split(".")

CASES = {
    "good": GOOD,
    "padded header": f"{b64(json.dumps({'alg': 'HS256'}).encode(), pad=True)}.{CLAIMS}.{SIG}",
    "stray bits": f"{HEADER}.{CLAIMS[:-1]}{'B' if CLAIMS[-1] == 'A' else 'A'}.{SIG}",
    "length 1 mod 4": f"{HEADER}.{CLAIMS}A.{SIG}",
    "bad character": f"{HEADER}.{CLAIMS}.{SIG[:-2]}!!",
    "non-ascii": f"{HEADER}.{CLAIMS}.{SIG[:-1]}é",
    "kid not a string": f"{part({'alg': 'HS256', 'kid': 7})}.{CLAIMS}.{SIG}",
    "kid": f"{part({'alg': 'HS512', 'kid': 'k1'})}.{CLAIMS}.{SIG}",
    "crit": f"{part({'alg': 'HS256', 'crit': ['exp']})}.{CLAIMS}.{SIG}",
    "b64 false": f"{part({'alg': 'HS256', 'b64': False})}.{CLAIMS}.{SIG}",
    "no alg": f"{part({'typ': 'JWT'})}.{CLAIMS}.{SIG}",
    "alg none": f"{part({'alg': 'none'})}.{CLAIMS}.",
    "claims a list": f"{HEADER}.{part(['acme'])}.{SIG}",
    "header a string": f"{part('HS256')}.{CLAIMS}.{SIG}",
    "claims not json": f"{HEADER}.{b64(b'{nope')}.{SIG}",
    "no iss": f"{HEADER}.{part({'sub': 'alice'})}.{SIG}",
    "iss a number": f"{HEADER}.{part({'iss': 5})}.{SIG}",
    "iss not a name": f"{HEADER}.{part({'iss': 'Acme!'})}.{SIG}",
    "empty signature": f"{HEADER}.{CLAIMS}.",
    "two segments": f"{HEADER}.{CLAIMS}",
    "four segments": f"{HEADER}.{CLAIMS}.{SIG}.{SIG}",
    "empty": "",
    "api key": "tdk_abc",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_cheap_reading_gives_what_pyjwt_gives(name: str) -> None:
    token = CASES[name]
    assert outcome(_unverified_issuer, token) == outcome(reference_issuer, token)


def test_only_the_plain_form_is_read_cheaply() -> None:
    """Anything else is left to PyJWT (None), and what is read cheaply is what PyJWT reads."""
    assert _peek(GOOD) == _peek_with_pyjwt(GOOD)
    for name in ("padded header", "stray bits", "kid", "crit", "b64 false", "empty signature", "non-ascii"):
        assert _peek(CASES[name]) is None, name


segments = st.one_of(
    st.sampled_from([HEADER, CLAIMS, SIG, "", "e30", part({"alg": "HS256", "kid": "x"})]),
    st.builds(
        part,
        st.dictionaries(
            st.sampled_from(["alg", "typ", "iss", "kid"]), st.sampled_from(["HS256", "acme", 1, None])
        ),
    ),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.!é", max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(segments, min_size=1, max_size=4))
def test_any_token_gets_the_same_answer(parts: list[str]) -> None:
    token = ".".join(parts)
    assert outcome(_unverified_issuer, token) == outcome(reference_issuer, token)


def test_secrets_are_prepared_once_and_still_checked() -> None:
    """The cached HS256 key preparation: a token verifies with its secret only, and a secret PyJWT refuses as
    an HMAC key (it looks like a public key) is refused on every token, not once."""
    assert _decoded(GOOD, "acme", "k" * 32)["sub"] == "alice"
    assert _decoded(GOOD, "acme", "k" * 32)["sub"] == "alice"  # the prepared secret, from the cache
    with pytest.raises(jwt.InvalidSignatureError):
        _decoded(GOOD, "acme", "j" * 32)
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    for _ in range(2):
        with pytest.raises(jwt.InvalidKeyError):
            _decoded(GOOD, "acme", pem)
