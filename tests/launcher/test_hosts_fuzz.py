"""Fuzzing the hosts-file parser: it only ever raises HostsFileError with a line number, and
nothing it accepts can carry a shell metacharacter into a command unquoted.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher import commands
from launcher.hosts import KEYS, HostsFileError, parse_hosts
from launcher.tf_config import tf_config_json

META = "$`;|&<>()'\"\\ \t*?[]{}!#~=@:/.,-_%+\n\r\x00é"
word = st.text(alphabet=st.sampled_from(list("abcxyz019.-_@") + list(META)), max_size=12)
key_value = st.builds(lambda k, v: f"{k}={v}", st.sampled_from([*KEYS, "colour", ""]), word)
line = st.lists(
    st.one_of(word, key_value, st.sampled_from(["localhost", "local", "gpu-a"])),
    min_size=0,
    max_size=5,
).map(" ".join)
hosts_text = st.one_of(st.lists(line, max_size=6).map("\n".join), st.text(max_size=200))

# Variables the shell itself sets or guards: not for a user to pass.
SHELL_OWN = {"PWD", "OLDPWD", "PPID", "IFS", "PS1", "PS2", "PS4", "OPTIND", "_", "SHLVL"}
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~/+@:,%-")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts_text)
def test_parser_raises_only_its_own_error_with_a_line(text: str) -> None:
    try:
        hosts = parse_hosts(text, "fuzz.txt")
    except HostsFileError as exc:
        assert 0 <= exc.line <= max(1, len(text.splitlines()))
        assert str(exc).startswith("fuzz.txt")
        assert "\n" not in str(exc).replace(repr(exc.value), "")
        return
    assert hosts
    for host in hosts:
        for value in (host.hostname, host.user, host.key, host.python, host.workdir, host.addr):
            if value is not None:
                assert set(value) <= SAFE, value
        tfc = tf_config_json(hosts, host.index)
        cmd = commands.start_command(
            host.workdir,
            host.python or "python3",
            "trainer",
            f"{host.workdir}/runs/x",
            host.index,
            ["--dataset", host.addr],
        )
        # The command splits into exactly the words we meant: no value was pasted raw.
        words = shlex.split(cmd)
        assert host.workdir in words
        if tfc is not None:
            assert tfc not in cmd  # TF_CONFIG travels in the env file only


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_quoting_round_trips_any_value(value: str) -> None:
    assert shlex.split(commands.q(value)) == [value]


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True).filter(lambda n: n not in SHELL_OWN),
        st.text(
            alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=30,
        ),
        max_size=4,
    )
)
def test_env_file_round_trips_through_a_real_shell(env: dict[str, str]) -> None:
    script = commands.env_file_content(env) + (
        f"exec {shlex.quote(sys.executable)} -c "
        "'import json, os, sys; sys.stdout.write(json.dumps(dict(os.environ)))'"
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env={})
    got = json.loads(out.stdout)
    assert {k: got.get(k) for k in env} == env
