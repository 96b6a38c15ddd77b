"""Settings from the environment, the way operators set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.errors import ConfigError
from tidings.settings import Settings


def test_variables_override_defaults_and_flags_override_variables() -> None:
    """TIDINGS_PORT sets the port; a CLI flag wins over it; a bool reads 'yes'."""
    env = {"TIDINGS_PORT": "9000", "TIDINGS_DEMO": "yes", "TIDINGS_MAX_RECIPIENTS": "10"}
    settings = Settings.from_env(env, port=9001)
    assert (settings.port, settings.demo, settings.max_recipients) == (9001, True, 10)


def test_a_secret_can_come_from_a_file(tmp_path: Path) -> None:
    """TIDINGS_ADMIN_TOKEN_FILE is read (trimmed) when TIDINGS_ADMIN_TOKEN is unset."""
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    assert Settings.from_env({"TIDINGS_ADMIN_TOKEN_FILE": str(secret)}).admin_token == "s3cret"
    both = {"TIDINGS_ADMIN_TOKEN": "direct", "TIDINGS_ADMIN_TOKEN_FILE": str(secret)}
    assert Settings.from_env(both).admin_token == "direct"


@pytest.mark.parametrize(
    "env",
    [
        {"TIDINGS_PORT": "eighty"},
        {"TIDINGS_RATE_PER_KEY": "fast"},
        {"TIDINGS_ADMIN_TOKEN_FILE": "/nonexistent"},
    ],
)
def test_bad_values_stop_the_start_with_a_clear_error(env: dict[str, str]) -> None:
    """A malformed variable or an unreadable secret file is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="TIDINGS_"):
        Settings.from_env(env)
