"""TF_CONFIG: one cluster for all, the line's position as the task index."""

from __future__ import annotations

import json

import pytest

from launcher.hosts import parse_hosts
from launcher.tf_config import cluster_spec, tf_config, tf_config_json


def test_design_example() -> None:
    hosts = parse_hosts("gpu-a\nalice@gpu-b addr=10.0.0.12 port=2222\n")
    assert json.loads(tf_config_json(hosts, 1) or "") == {
        "cluster": {"worker": ["gpu-a:23456", "10.0.0.12:23456"]},
        "task": {"type": "worker", "index": 1},
    }


def test_every_worker_gets_the_same_cluster_and_its_index() -> None:
    hosts = parse_hosts("localhost\nlocalhost tf_port=23457\nlocal tf_port=1\n")
    configs = [tf_config(hosts, i) for i in range(3)]
    assert all(c is not None and c["cluster"] == cluster_spec(hosts) for c in configs)
    assert [c["task"] for c in configs if c] == [{"type": "worker", "index": i} for i in range(3)]
    assert cluster_spec(hosts) == {"worker": ["localhost:23456", "localhost:23457", "localhost:1"]}


def test_one_worker_gets_no_tf_config() -> None:
    assert tf_config(parse_hosts("localhost\n"), 0) is None
    assert tf_config_json(parse_hosts("gpu\n"), 0) is None


def test_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        tf_config(parse_hosts("a\nb\n"), 2)


def test_json_is_compact_one_line() -> None:
    text = tf_config_json(parse_hosts("a\nb\n"), 0) or ""
    assert " " not in text and "\n" not in text
