"""Sans-IO pieces of remote/: Status documents, resize messages, channel codec, kube API."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muxstream.remote import ExitStatus, KubeApi, RemoteStatusError, TerminalSize
from muxstream.remote._channels import (
    ChannelClosed,
    ChannelData,
    decode_message,
    encode_close,
    encode_data,
    negotiate,
    split_header_values,
)
from muxstream.remote._server_kubeapi import ApiResponse, SubresourceRequest
from muxstream.remote._status import (
    ResizeDecoder,
    decode_status,
    encode_error,
    encode_resize,
    encode_status,
)


def test_success_status_is_what_kubelet_writes() -> None:
    assert json.loads(encode_status(0)) == {"metadata": {}, "status": "Success"}


def test_nonzero_exit_status_carries_exit_code_cause() -> None:
    doc = json.loads(encode_status(3))
    assert doc["status"] == "Failure"
    assert doc["reason"] == "NonZeroExitCode"
    assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


@given(st.integers(0, 255))
def test_status_round_trips(code: int) -> None:
    assert decode_status(encode_status(code)).returncode == code


def test_failure_without_exit_code_raises_with_message() -> None:
    with pytest.raises(RemoteStatusError, match="cannot start"):
        decode_status(encode_error("cannot start 'x'"))


def test_empty_error_stream_is_an_error_in_v4_and_success_in_v2() -> None:
    with pytest.raises(RemoteStatusError):
        decode_status(b"", version=4)
    assert decode_status(b"", version=2) == ExitStatus(0)
    with pytest.raises(RemoteStatusError, match="boom"):
        decode_status(b"boom", version=3)


def test_malformed_status_is_a_protocol_error() -> None:
    with pytest.raises(RemoteStatusError):
        decode_status(b"{not json")
    bad_code = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "300"}]},
    }
    with pytest.raises(RemoteStatusError):
        decode_status(json.dumps(bad_code).encode())


def test_resize_message_matches_go_json_encoder() -> None:
    assert encode_resize(80, 24) == b'{"Width":80,"Height":24}\n'


@given(
    st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535)), max_size=5),
    st.data(),
)
def test_resize_decoder_handles_any_chunking(
    sizes: list[tuple[int, int]], data: st.DataObject
) -> None:
    wire = b"".join(encode_resize(w, h) for w, h in sizes)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = ResizeDecoder()
    got: list[TerminalSize] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        got.extend(decoder.feed(wire[start:cut]))
        start = cut
    assert got == [TerminalSize(w, h) for w, h in sizes]


def test_resize_decoder_rejects_garbage_objects() -> None:
    with pytest.raises(ValueError):
        list(ResizeDecoder().feed(b'{"Width":"x","Height":1}'))
    with pytest.raises(ValueError):
        list(ResizeDecoder(max_buffer=16).feed(b"{" + b" " * 64))


def test_channel_codec() -> None:
    assert encode_data(1, b"hi") == b"\x01hi"
    assert decode_message(b"\x01hi") == ChannelData(1, b"hi")
    assert encode_close(0) == b"\xff\x00"
    assert decode_message(b"\xff\x00", version=5) == ChannelClosed(0)
    assert decode_message(b"\xff\x00", version=4) == ChannelData(255, b"\x00")
    assert decode_message(b"") is None
    with pytest.raises(ValueError):
        decode_message(b"\xff\x00\x01", version=5)
    with pytest.raises(ValueError):
        encode_data(255, b"")


def test_negotiation_prefers_client_order() -> None:
    offered = split_header_values(["v5.channel.k8s.io, v4.channel.k8s.io", "channel.k8s.io"])
    assert offered == ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
    assert negotiate(offered, ("v4.channel.k8s.io", "v5.channel.k8s.io")) == "v5.channel.k8s.io"
    assert negotiate(["channel.k8s.io"], ("v4.channel.k8s.io",)) is None


def test_kube_api_serves_discovery_and_pod() -> None:
    api = KubeApi({"demo": ["main", "side"]}, tty_containers=["side"])
    assert api.respond("GET", "/version?timeout=5s").status == 200
    assert json.loads(api.respond("GET", "/api?timeout=32s").body)["versions"] == ["v1"]
    resources = json.loads(api.respond("GET", "/api/v1").body)["resources"]
    assert {r["name"] for r in resources} >= {"pods", "pods/exec", "pods/portforward"}
    pod = json.loads(api.respond("GET", "/api/v1/namespaces/default/pods/demo").body)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["main", "side"]
    assert pod["spec"]["containers"][1]["tty"] is True
    assert pod["status"]["phase"] == "Running"
    assert api.respond("GET", "/api/v1/namespaces/default/pods/nope").status == 404
    assert api.respond("GET", "/api/v1/namespaces/other/pods/demo").status == 404


def test_kube_api_parses_exec_query_like_kubectl_sends_it() -> None:
    api = KubeApi()
    target = (
        "/api/v1/namespaces/default/pods/demo/exec?command=sh&command=-c&command=echo%20hi"
        "&container=main&stdin=true&stdout=true&tty=true&stderr=true"
    )
    parsed = api.parse_subresource(target)
    assert isinstance(parsed, SubresourceRequest)
    request = parsed.exec_request()
    assert request.command == ("sh", "-c", "echo hi")
    assert request.stdin and request.stdout and request.tty
    assert not request.stderr  # a TTY has no separate stderr
    assert api.parse_subresource("/api/v1/namespaces/default/pods/demo") is None
    default = api.parse_subresource("/api/v1/namespaces/default/pods/demo/attach?stdin=true")
    assert isinstance(default, SubresourceRequest)
    assert default.exec_request().container == "main"  # the pod's first container
    unknown = api.parse_subresource("/api/v1/namespaces/default/pods/x/exec?command=ls")
    assert isinstance(unknown, ApiResponse) and unknown.status == 404
    bad = api.parse_subresource("/api/v1/namespaces/default/pods/demo/exec?command=ls&container=zz")
    assert isinstance(bad, ApiResponse) and bad.status == 400
