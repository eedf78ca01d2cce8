import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainer.cluster import Cluster, parse_tf_config
from trainer.errors import InputError

TWO = ["a:1", "b:2"]


def tf_config(workers: object = TWO, index: object = 0, kind: object = "worker") -> str:
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": kind, "index": index}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, Cluster()),
        ("", Cluster()),
        ("  \n", Cluster()),
        (tf_config(), Cluster(workers=("a:1", "b:2"), index=0)),
        (tf_config(index=1), Cluster(workers=("a:1", "b:2"), index=1)),
        (tf_config(["10.0.0.1:23456"]), Cluster(workers=("10.0.0.1:23456",), index=0)),
        (tf_config(["[::1]:23456", "b:2"]), Cluster(workers=("[::1]:23456", "b:2"), index=0)),
    ],
)
def test_parse_tf_config_reads_cluster(text: str | None, expected: Cluster) -> None:
    assert parse_tf_config(text) == expected


@pytest.mark.parametrize(
    ("cluster", "workers", "role"),
    [(Cluster(), 1, "chief"), (Cluster(("a:1", "b:2"), 1), 2, "worker")],
)
def test_cluster_counts_workers_and_names_role(cluster: Cluster, workers: int, role: str) -> None:
    assert (cluster.num_workers, cluster.role) == (workers, role)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{cluster:", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", "TF_CONFIG: expected a JSON object, got list"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG.cluster: expected an object"),
        (json.dumps({"cluster": {"worker": TWO, "ps": ["c:3"]}}), "only 'worker' tasks"),
        (tf_config([]), "TF_CONFIG.cluster.worker: expected a non-empty list"),
        (tf_config("a:1"), "TF_CONFIG.cluster.worker: expected a non-empty list"),
        (tf_config(["a:1", 7]), 'TF_CONFIG.cluster.worker[1]: expected a "host:port" string'),
        (tf_config(["a"]), "TF_CONFIG.cluster.worker[0]: expected \"host:port\", got 'a'"),
        (tf_config(["a:http"]), "expected a port from 1 to 65535, got 'http'"),
        (tf_config(["a:70000"]), "expected a port from 1 to 65535, got '70000'"),
        (tf_config(["a:1", "a:1"]), "'a:1' is listed twice"),
        (json.dumps({"cluster": {"worker": TWO}}), "TF_CONFIG.task: expected an object"),
        (tf_config(kind="chief"), "TF_CONFIG.task.type: expected 'worker', got 'chief'"),
        (tf_config(index="1"), "TF_CONFIG.task.index: expected a whole number, got '1'"),
        (tf_config(index=True), "TF_CONFIG.task.index: expected a whole number, got True"),
        (tf_config(index=2), "TF_CONFIG.task.index: expected 0 to 1 (the cluster lists 2"),
        (tf_config(index=-1), "TF_CONFIG.task.index: expected 0 to 1"),
    ],
)
def test_parse_tf_config_names_the_bad_field(text: str, message: str) -> None:
    with pytest.raises(InputError) as error:
        parse_tf_config(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.one_of(
        st.text(max_size=40),
        json_values.map(json.dumps),
        st.builds(tf_config, json_values, json_values, json_values),
    )
)
def test_parse_tf_config_only_ever_raises_its_own_one_line_error(text: str) -> None:
    try:
        cluster = parse_tf_config(text)
    except InputError as error:
        assert "\n" not in str(error) and str(error).startswith("TF_CONFIG")
        return
    assert 0 <= cluster.index < cluster.num_workers
