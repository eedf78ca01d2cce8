"""The hosts-file parser: a table of good lines, a table of bad ones, and file-level rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.hosts import Host, HostsFileError, load_hosts, parse_hosts

GOOD = [
    ("localhost", dict(hostname="localhost", local=True, addr="localhost", tf_port=23456)),
    ("local tf_port=23457", dict(hostname="local", local=True, tf_port=23457)),
    ("127.0.0.1", dict(local=True, addr="localhost")),
    ("gpu-a", dict(hostname="gpu-a", local=False, addr="gpu-a", user=None, port=None)),
    (
        "alice@gpu-a port=2222 addr=10.0.0.11 tf_port=23456 python=/opt/venv/bin/python "
        "workdir=~/tfjobs",
        dict(
            user="alice",
            hostname="gpu-a",
            port=2222,
            addr="10.0.0.11",
            python="/opt/venv/bin/python",
            workdir="~/tfjobs",
            local=False,
        ),
    ),
    ("gpu-b key=~/.ssh/id_ed25519", dict(key="~/.ssh/id_ed25519", local=False)),
    ("localhost port=2222", dict(local=False, port=2222, addr="localhost")),
    ("localhost user=bob", dict(local=False, user="bob")),
    ("bob@127.0.0.1 key=/k/id", dict(local=False, user="bob", key="/k/id")),
    ("10.1.2.3 user=x_y", dict(hostname="10.1.2.3", user="x_y", addr="10.1.2.3")),
    ("node1.example.org   tf_port=1  # comment", dict(hostname="node1.example.org", tf_port=1)),
]


@pytest.mark.parametrize(("line", "expected"), GOOD, ids=[g[0][:40] for g in GOOD])
def test_good_line(line: str, expected: dict[str, object]) -> None:
    (host,) = parse_hosts(line + "\n", "h.txt")
    for key, value in expected.items():
        assert getattr(host, key) == value, key
    assert host.index == 0 and host.role == "chief" and host.line == 1


BAD = [
    ("gpu-a colour=red", "unknown key 'colour'"),
    ("gpu-a tf_port", "expected key=value"),
    ("gpu-a port=0", "port must be a port number from 1 to 65535"),
    ("gpu-a port=65536", "port must be a port number"),
    ("gpu-a tf_port=abc", "tf_port must be a port number"),
    ("gpu-a tf_port=²", "tf_port must be"),
    ("gpu-a tf_port=1 tf_port=2", "given twice"),
    ("gpu-a python=$(rm -rf ~)", "python must be non-empty and hold only"),
    ("gpu-a python=/bin/py;reboot", "python must be non-empty"),
    ("gpu-a workdir=`id`", "workdir must be"),
    ("gpu-a key=", "key must be non-empty"),
    ("gpu-a addr='x'", "addr must be"),
    ("gp;u", "expected a host name"),
    ("-oProxyCommand=x", "expected a host name"),
    ("al ice@gpu", "expected key=value"),
    ("b@d@gpu", "user name before @ is not valid"),
    ("alice@gpu user=bob", "user given both"),
    ("gpu user=$x", "user must be"),
    ("gpu addr=::1", "addr is IPv6 or has a port: TensorFlow's server listens on IPv4 only"),
    ("gpu addr=fe80::1%eth0", "addr is IPv6"),
    ("gpu addr=10.0.0.1:99", "(the port goes in tf_port=)"),
    ("gpu addr=-x", "addr must be a host name or IPv4 address"),
]


@pytest.mark.parametrize(("line", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_line(line: str, message: str) -> None:
    with pytest.raises(HostsFileError) as err:
        parse_hosts("# first line is a comment\n" + line + "\n", "my-hosts.txt")
    assert err.value.line == 2
    assert message in str(err.value)
    assert str(err.value).startswith("my-hosts.txt:2:")


def test_order_gives_index_and_role() -> None:
    hosts = parse_hosts("a\n\n# c\nb tf_port=1\nc\n")
    assert [(h.index, h.name, h.role, h.line) for h in hosts] == [
        (0, "a", "chief", 1),
        (1, "b", "worker", 4),
        (2, "c", "worker", 5),
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_empty_file(text: str) -> None:
    with pytest.raises(HostsFileError, match="lists no hosts"):
        parse_hosts(text, "h.txt")


@pytest.mark.parametrize(
    "text",
    [
        "localhost\nlocalhost\n",
        "localhost tf_port=5000\n127.0.0.1 tf_port=5000\n",
        # TF binds every interface: two loopback addresses are still one machine.
        "a@127.0.0.2 port=22 tf_port=7000\nb@127.0.0.3 port=22 tf_port=7000\n",
        "gpu-a\ngpu-a\n",
    ],
)
def test_duplicate_tf_port_on_one_machine(text: str) -> None:
    with pytest.raises(HostsFileError, match="already used") as err:
        parse_hosts(text, "h.txt")
    assert err.value.line == 2


def test_same_port_on_different_machines_is_fine() -> None:
    hosts = parse_hosts("gpu-a\ngpu-b\n")
    assert [h.tf_address for h in hosts] == ["gpu-a:23456", "gpu-b:23456"]


def test_loopback_addr_mixed_with_remote_hosts() -> None:
    with pytest.raises(HostsFileError, match="loopback") as err:
        parse_hosts("localhost\ngpu-b\n", "h.txt")
    assert err.value.line == 1
    hosts = parse_hosts("localhost addr=10.0.0.5\ngpu-b\n")
    assert hosts[0].local and hosts[0].addr == "10.0.0.5"


def test_default_hosts_file_is_two_local_workers() -> None:
    hosts = load_hosts(Path(__file__).parents[2] / "hosts.txt")
    assert [(h.local, h.tf_port) for h in hosts] == [(True, 23456), (True, 23457)]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HostsFileError, match="not found"):
        load_hosts(tmp_path / "nope.txt")


def test_ssh_target() -> None:
    host = Host(index=0, name="a@h", hostname="h", user="a", port=2, options={"user": "a"})
    assert host.ssh_target == "a@h:2"


def test_a_byte_order_mark_is_not_part_of_the_first_host(tmp_path: Path) -> None:
    path = tmp_path / "hosts.txt"
    path.write_bytes("\ufefflocalhost tf_port=23456\nlocal tf_port=23457\n".encode())
    hosts = load_hosts(path)
    assert [h.name for h in hosts] == ["localhost", "local"] and hosts[0].local
