"""The argument-aware allow rules (``muxstream.remote._server_allow``), synchronously."""

from __future__ import annotations

import pytest

from muxstream.remote import RemoteServerConfig, allow_list_problem
from muxstream.remote._client_copy_parts import temp_name
from muxstream.remote._server_allow import command_refusal, is_copy_command

TEMP = "/srv/" + temp_name("data.bin", resume=False)
RESUME_TEMP = "/srv/" + temp_name("data.bin", resume=True)

#: Every argv shape `muxstream cp` sends, with realistic operands.
MUXSTREAM_ARGVS = [
    ["ls", "-d", "-L", "-l", "-n", "--", "/srv/data.bin"],
    ["ls", "-d", "-L", "-l", "-n", "--", "./relative dir/"],
    ["tee", "--", TEMP],
    ["tee", "-a", "--", RESUME_TEMP],
    ["tail", "-c", "+1", "--", "/srv/data.bin"],
    ["tail", "-c", "+1048577", "--", "./data.bin"],
    ["sha256sum", "--", TEMP],
    ["find", "/srv/tree", "-type", "f", "-exec", "sha256sum", "{}", "+"],
    ["find", "./tree", "-type", "f", "-exec", "sha256sum", "{}", "+"],
    ["chmod", "755", "--", TEMP],
    ["mv", "-f", "--", TEMP, "/srv/data.bin"],
    ["cp", "-R", "-p", "--", TEMP + "/.", "/srv/tree"],
    ["rm", "-f", "--", TEMP],
    ["rm", "-r", "-f", "--", TEMP],
    ["tar", "-xmf", "-", "-C", "/srv"],
    ["tar", "cf", "-", "-C", "/srv", "tree"],
]

#: What a stock kubectl v1.32 `cp` sends (kubectl/pkg/cmd/cp/cp.go).
KUBECTL_ARGVS = [
    ["test", "-d", "/srv/data.bin"],
    ["tar", "-xmf", "-", "-C", "/srv"],
    ["tar", "-xmf", "-"],
    ["tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", "/srv"],
    ["tar", "cf", "-", "/srv/data.bin"],
    ["tar", "cf", "-", "relative/path"],
]

#: Each would run a command of the client's choosing, or read a path as an option.
HOSTILE_ARGVS = [
    ["tar", "-xmf", "-", "-C", "/srv", "--to-command=sh -c id"],
    ["tar", "--to-command=id", "-xmf", "-", "-C", "/srv"],
    ["tar", "cf", "-", "--checkpoint=1", "--checkpoint-action=exec=id", "/etc"],
    ["tar", "cf", "-", "--checkpoint-action=exec=id"],
    ["tar", "-I", "sh -c id", "-cf", "-", "/etc"],
    ["tar", "--use-compress-program=id", "-cf", "-", "/etc"],
    ["tar", "-xmf", "-", "-C", "--to-command=id"],
    ["tar", "cf", "-", "-C", "/srv", "--to-command=id"],
    ["tar", "cf", "-", "-T", "/etc/list"],
    ["tar", "cf", "/srv/out.tar", "/etc"],
    ["tar", "--rsh-command=/bin/sh", "-xf", "host:/x"],
    ["find", "/", "-exec", "sh", "-c", "id", "+"],
    ["find", "/srv", "-type", "f", "-exec", "sh", "{}", "+"],
    ["find", "-delete", "-type", "f", "-exec", "sha256sum", "{}", "+"],
    ["find", "!", "-type", "f", "-exec", "sha256sum", "{}", "+"],
    ["tail", "-c", "+1", "--", "-n"],
    ["tail", "-c", "-5", "--", "/srv/x"],
    ["tail", "-c", "+1", "/srv/x"],
    ["tee", "--", "/etc/passwd"],
    ["tee", "/srv/.x.muxstream-resume.part"],
    ["mv", "-f", "--", "/etc/passwd", "/srv/x"],
    ["rm", "-r", "-f", "--", "/"],
    ["rm", "-r", "-f", "--", "/srv"],
    ["rm", "-f", "--", "/srv/.x.muxstream-resume.part/.."],
    ["chmod", "4755", "--", TEMP],
    ["chmod", "755", "--", "/usr/bin/sudo"],
    ["cp", "-R", "-p", "--", "/etc/.", "/srv"],
    ["sha256sum", "-c", "/srv/list"],
    ["test", "-d", "-x"],
    ["sh", "-c", "tar cf - /srv/x | tail -c+5"],  # kubectl cp --retries: a shell
]


@pytest.mark.parametrize("argv", MUXSTREAM_ARGVS + KUBECTL_ARGVS, ids=" ".join)
def test_copy_shapes_are_admitted_with_allow_copy(argv: list[str]) -> None:
    assert is_copy_command(argv)
    assert command_refusal(argv, set(), allow_copy=True) is None
    assert command_refusal(argv, {"echo"}, allow_copy=False) is not None


@pytest.mark.parametrize("argv", HOSTILE_ARGVS, ids=" ".join)
def test_other_arguments_to_the_copy_programs_are_refused(argv: list[str]) -> None:
    assert not is_copy_command(argv)
    reason = command_refusal(argv, {"echo"}, allow_copy=True)
    assert reason is not None and repr(argv[0]) in reason


def test_listed_programs_still_take_any_arguments() -> None:
    assert command_refusal(["echo", "-n", "x"], {"echo"}, allow_copy=False) is None
    assert command_refusal(["tar", "--version"], None, allow_copy=False) is None  # no list
    assert command_refusal(["uname"], {"echo"}, allow_copy=True) == "command 'uname' is not allowed"


@pytest.mark.parametrize("runner", ["tar", "find"])
def test_an_allow_list_cannot_name_tar_or_find(runner: str) -> None:
    problem = allow_list_problem({"echo", runner})
    assert problem is not None and runner in problem
    with pytest.raises(ValueError, match="allow_copy=True"):
        RemoteServerConfig(token="a-token-long-enough", allowed_commands={runner})
    RemoteServerConfig(token="a-token-long-enough", allowed_commands=set(), allow_copy=True)
