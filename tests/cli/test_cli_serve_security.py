"""`muxstream serve` as an attacker meets it: start-up warnings, tokens, limits."""

from __future__ import annotations

from .conftest import start_server, stop_server


def test_no_auth_start_up_says_every_local_user_can_run_commands() -> None:
    served = start_server("--insecure-no-auth")
    code, output = stop_server(served)
    assert code == 0, output
    lines = [line for line in output.splitlines() if "every local user" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith("muxstream serve: warning: no authentication on 127.0.0.1:")
    assert "can run commands as" in lines[0]
