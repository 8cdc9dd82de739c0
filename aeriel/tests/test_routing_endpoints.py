"""Endpoint lists (code, files, the cloud deployment's output) and the consistent-hash ring."""

from __future__ import annotations

import collections
import json

import pytest

from hermes.aeriel import EndpointError
from hermes.aeriel.routing import Endpoint, HashRing, load_endpoints


def test_load_endpoints_reads_the_cloud_deployments_json(tmp_path):
    path = tmp_path / "endpoints.json"
    path.write_text(
        json.dumps(
            {
                "endpoints": [
                    {
                        "name": "gpu-0",
                        "grpc": "10.0.0.4:8001",
                        "http": "10.0.0.4:8000",
                        "metrics": "10.0.0.4:8002",
                    },
                    {"name": "gpu-1", "grpc": "10.0.0.5:31001"},
                ]
            }
        )
    )
    first, second = load_endpoints(path)
    assert first == Endpoint(
        name="gpu-0", grpc="10.0.0.4:8001", http="10.0.0.4:8000", metrics="10.0.0.4:8002"
    )
    assert first.metrics_url == "http://10.0.0.4:8002/metrics"
    assert first.http_url == "http://10.0.0.4:8000"
    assert (second.name, second.grpc, second.http, second.metrics_url) == (
        "gpu-1",
        "10.0.0.5:31001",
        None,
        None,
    )
    # to_dict() writes the entry back: the file's shape, unknown addresses left out
    assert second.to_dict() == {"name": "gpu-1", "grpc": "10.0.0.5:31001"}
    assert load_endpoints({"endpoints": [first.to_dict(), second.to_dict()]}) == [first, second]


def test_load_endpoints_reads_a_text_file_and_strings_from_code(tmp_path):
    path = tmp_path / "servers.txt"
    path.write_text(
        "# one per line\nnode-a\nnode-b:9001   # gRPC only\nname=c,grpc=h:1,metrics=http://h:3/metrics\n"
    )
    a, b, c = load_endpoints(str(path))
    assert (a.grpc, a.http, a.metrics) == ("node-a:8001", "node-a:8000", "node-a:8002")
    assert (b.name, b.grpc, b.metrics) == ("node-b:9001", "node-b:9001", None)
    assert (c.name, c.grpc, c.metrics) == ("c", "h:1", "h:3")
    assert load_endpoints(["node-a"]) == [a]
    assert load_endpoints({"endpoints": [{"grpc": "x:1"}]}) == [Endpoint(name="x:1", grpc="x:1")]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ([], "no endpoints given"),
        (["a:1", "a:1"], "share the name 'a:1'"),
        ([{"name": "n", "grpc": "h"}], "grpc must be 'host:port'"),
        ([{"name": "n", "grpc": "h:99999"}], r"port in 1\.\.65535, got 'h:99999'"),
        ([{"name": "n", "grpc": "h:1", "gpu": 0}], r"unknown field\(s\) gpu"),
        ([{"name": "n"}], "has no 'grpc' address"),
        ([3.5], "is a float; expected an Endpoint"),
        ({"servers": []}, "needs an 'endpoints' list"),
        (["name=x,port=3"], "'port=3' is not one of"),
    ],
)
def test_load_endpoints_rejects_malformed_entries_naming_them(source, message):
    with pytest.raises(EndpointError, match=message):
        load_endpoints(source)


def test_load_endpoints_names_a_missing_or_malformed_file(tmp_path):
    with pytest.raises(EndpointError, match="does not exist"):
        load_endpoints(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"endpoints": {"a": 1}}')
    with pytest.raises(EndpointError, match="'endpoints' must be a list, got dict"):
        load_endpoints(bad)
    assert issubclass(EndpointError, ValueError)


def test_ring_spreads_1000_ids_within_20_percent_for_two_to_five_servers():
    for count in range(2, 6):
        ring = HashRing([f"10.0.0.{i}:8001" for i in range(count)])
        spread = collections.Counter(ring.node_for(i) for i in range(1, 1001))
        assert len(spread) == count
        assert all(abs(n - 1000 / count) <= 0.2 * 1000 / count for n in spread.values()), spread


def test_adding_a_server_moves_about_one_in_n_ids_and_only_to_it():
    ring = HashRing(["a", "b", "c"])
    before = {i: ring.node_for(i) for i in range(1, 1001)}
    ring.add("d")
    after = {i: ring.node_for(i) for i in range(1, 1001)}
    moved = [i for i in before if before[i] != after[i]]
    assert {after[i] for i in moved} == {"d"}
    assert 0.8 * 250 <= len(moved) <= 1.2 * 250
    ring.remove("d")
    assert {i: ring.node_for(i) for i in range(1, 1001)} == before


def test_ring_lookup_is_stable_and_skips_excluded_nodes():
    ring = HashRing(["a", "b", "c"])
    again = HashRing(["c", "a", "b"])
    assert [ring.node_for(f"run-{i}") for i in range(200)] == [again.node_for(f"run-{i}") for i in range(200)]
    order = list(ring.nodes_for(42))
    assert sorted(order) == ["a", "b", "c"]
    assert ring.node_for(42, exclude=[order[0]]) == order[1]
    with pytest.raises(LookupError, match="every node is excluded"):
        ring.node_for(42, exclude=["a", "b", "c"])
    with pytest.raises(LookupError, match="no nodes"):
        HashRing().node_for(1)
    with pytest.raises(ValueError, match="already on the ring"):
        ring.add("a")
    with pytest.raises(KeyError, match="'z' is not on the ring"):
        ring.remove("z")
    with pytest.raises(ValueError, match="vnodes must be a positive integer, got 0"):
        HashRing(vnodes=0)
