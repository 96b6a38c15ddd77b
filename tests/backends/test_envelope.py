"""The bus envelope: what one gateway decodes is what a worker encoded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.backends.envelope import decode_live, encode_live, token
from tidings.core.models import LiveMessage

ids = st.text(min_size=1, max_size=64)


@given(
    ids,
    ids,
    st.integers(min_value=0, max_value=2**63 - 1),
    st.binary(max_size=256),
    st.floats(min_value=0, max_value=4e9),
)
def test_envelope_round_trips(app: str, user: str, seq: int, payload: bytes, accepted_at: float) -> None:
    """Any app, user, seq, payload bytes and acceptance time come out exactly as they went in."""
    message = LiveMessage(app, user, seq, payload, accepted_at=accepted_at)
    assert decode_live(encode_live(message)) == message


@given(ids)
def test_tokens_never_contain_subject_separators_or_wildcards(value: str) -> None:
    """A user id like 'a.b' or '*' cannot address or wildcard other users' subjects."""
    assert not set(token(value)) & set(".*> \t\r\n")


@pytest.mark.parametrize("data", [b"", b"no header", b"[1]\n", b'{"a": 1}\n{}', b"\xff\n"])
def test_foreign_data_is_a_value_error(data: bytes) -> None:
    """Something that is not our envelope is refused with ValueError, never another exception."""
    with pytest.raises(ValueError):  # noqa: PT011 - orjson's JSONDecodeError is a ValueError too
        decode_live(data)
