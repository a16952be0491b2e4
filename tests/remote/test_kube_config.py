"""muxstream.kube: reading and merging kubeconfig files as kubectl does (no network)."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from muxstream.kube import (
    ContainerNotFound,
    ContainerNotRunning,
    CredentialError,
    Forbidden,
    KubeconfigError,
    NotFound,
    PodNotFound,
    Unauthorized,
    api_error,
    load_kubeconfig,
)
from muxstream.kube._config import ExecConfig
from muxstream.kube._credentials import TokenFile, parse_exec_credential


def kubeconfig(
    clusters: dict[str, dict[str, object]] | None = None,
    users: dict[str, dict[str, object]] | None = None,
    contexts: dict[str, dict[str, object]] | None = None,
    current: str | None = None,
) -> dict[str, object]:
    doc: dict[str, object] = {"apiVersion": "v1", "kind": "Config"}
    if clusters is not None:
        doc["clusters"] = [{"name": n, "cluster": c} for n, c in clusters.items()]
    if users is not None:
        doc["users"] = [{"name": n, "user": u} for n, u in users.items()]
    if contexts is not None:
        doc["contexts"] = [{"name": n, "context": c} for n, c in contexts.items()]
    if current is not None:
        doc["current-context"] = current
    return doc


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def simple(server: str = "https://a:6443", **user: object) -> dict[str, object]:
    return kubeconfig(
        {"c": {"server": server}},
        {"u": user or {"token": "t"}},
        {"x": {"cluster": "c", "user": "u", "namespace": "ns1"}},
        "x",
    )


def test_first_file_wins_per_entry_and_for_current_context(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a.yaml",
        kubeconfig({"c": {"server": "https://first:1"}}, {"u": {"token": "one"}}),
    )
    second = write(
        tmp_path / "b.yaml",
        kubeconfig(
            {"c": {"server": "https://second:2"}, "d": {"server": "https://d:3"}},
            {"u": {"token": "two"}},
            {"x": {"cluster": "c", "user": "u"}, "y": {"cluster": "d", "user": "u"}},
            "x",
        ),
    )
    third = write(tmp_path / "c.yaml", kubeconfig(current="y"))
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(tmp_path / "gone"), str(second),
                                          str(third)])}
    config = load_kubeconfig(environ=env)
    settings = config.resolve()
    assert settings.context == "x"  # second's current-context: first is empty
    assert settings.server == "https://first:1"
    assert settings.token == "one"
    assert config.resolve("y").server == "https://d:3"
    assert config.files == [first, second, third]  # the missing file is skipped


def test_home_kube_config_is_the_default(tmp_path: Path) -> None:
    write(tmp_path / ".kube" / "config", simple())
    settings = load_kubeconfig(environ={"HOME": str(tmp_path)}).resolve()
    assert settings.namespace == "ns1"
    assert load_kubeconfig(environ={"HOME": str(tmp_path)}).resolve(
        namespace="other"
    ).namespace == "other"


def test_paths_are_relative_to_the_file_that_defines_them(tmp_path: Path) -> None:
    (tmp_path / "conf" / "certs").mkdir(parents=True)
    (tmp_path / "conf" / "certs" / "ca.pem").write_bytes(b"CA")
    (tmp_path / "conf" / "tok").write_text("from-file\n")
    path = write(
        tmp_path / "conf" / "kubeconfig",
        kubeconfig(
            {"c": {"server": "https://a", "certificate-authority": "certs/ca.pem"}},
            {"u": {"tokenFile": "tok", "exec": {
                "command": "./bin/plugin", "apiVersion": "client.authentication.k8s.io/v1",
                "interactiveMode": "Never"}}},
            {"x": {"cluster": "c", "user": "u"}},
            "x",
        ),
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the kubeconfig path itself is relative too
    try:
        settings = load_kubeconfig(path.relative_to(tmp_path)).resolve()
    finally:
        os.chdir(cwd)
    assert settings.ca_pem == b"CA"
    assert settings.token_file == tmp_path / "conf" / "tok"
    assert settings.exec is not None
    assert Path(settings.exec.command) == tmp_path / "conf" / "bin" / "plugin"


def test_exec_command_without_slash_stays_on_path(tmp_path: Path) -> None:
    path = write(tmp_path / "k", simple(exec={
        "command": "gke-gcloud-auth-plugin", "apiVersion": "client.authentication.k8s.io/v1beta1"}))
    settings = load_kubeconfig(path).resolve()
    assert settings.exec is not None and settings.exec.command == "gke-gcloud-auth-plugin"


def test_inline_data_fields_are_base64(tmp_path: Path) -> None:
    b64 = base64.b64encode
    path = write(tmp_path / "k", kubeconfig(
        {"c": {"server": "https://a", "certificate-authority-data": b64(b"CA").decode()}},
        {"u": {"client-certificate-data": b64(b"CERT").decode(),
               "client-key-data": b64(b"KEY").decode()}},
        {"x": {"cluster": "c", "user": "u"}}, "x"))
    settings = load_kubeconfig(path).resolve()
    assert (settings.ca_pem, settings.client_cert_pem, settings.client_key_pem) == (
        b"CA", b"CERT", b"KEY")


@pytest.mark.parametrize(
    ("doc", "key", "problem"),
    [
        (simple(**{"client-key": "missing.key", "client-certificate": "missing.crt"}),
         'users["u"].user.client-certificate', "cannot read"),
        (simple(**{"client-certificate-data": "bm90IGI2NA=="}),
         'users["u"].user.client-key', "needs both"),
        (simple(**{"client-key-data": "%%%"}), 'users["u"].user.client-key-data', "base64"),
        (simple(tokenFile="nope"), 'users["u"].user.tokenFile', "cannot read"),
        (kubeconfig({"c": {}}, {}, {"x": {"cluster": "c"}}, "x"),
         'clusters["c"].cluster.server', "no server"),
        (kubeconfig({}, {}, {"x": {"cluster": "c"}}, "x"),
         'contexts["x"].context.cluster', 'cluster "c" does not exist'),
        (kubeconfig({}, {}, {}, "nope"), "current-context", 'context "nope" does not exist'),
        (kubeconfig({}, {}, {}), "current-context", "not set"),
        (simple(exec={"command": "p", "apiVersion": "client.authentication.k8s.io/v1"}),
         'users["u"].user.exec.interactiveMode', "must be set"),
        (simple(exec={"command": "p", "apiVersion": "client.authentication.k8s.io/v1alpha1"}),
         'users["u"].user.exec.apiVersion', "not supported"),
        (kubeconfig({"c": {"server": "https://a", "insecure-skip-tls-verify": True,
                           "certificate-authority-data": "Q0E="}}, {}, {"x": {"cluster": "c"}},
                    "x"),
         'clusters["c"].cluster.insecure-skip-tls-verify', "not allowed"),
        ({"clusters": {"c": 1}}, "clusters", "expected a list"),
        (simple(**{"auth-provider": {"name": "gcp"}}), 'users["u"].user.auth-provider',
         "exec credential plugin"),
    ],
)
def test_bad_kubeconfig_is_one_line_naming_file_and_key(
    tmp_path: Path, doc: object, key: str, problem: str
) -> None:
    path = write(tmp_path / "kubeconfig", doc)
    with pytest.raises(KubeconfigError) as caught:
        load_kubeconfig(path).resolve()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {key}: "), text
    assert problem in text
    assert caught.value.key == key


def test_missing_explicit_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=f"^{tmp_path / 'none'}: no such file$"):
        load_kubeconfig(tmp_path / "none")


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nclusters:\n- name: [unclosed\n")
    with pytest.raises(KubeconfigError) as caught:
        load_kubeconfig(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: line ") and "malformed YAML" in text and "\n" not in text


def test_nothing_found_anywhere(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="no kubeconfig found"):
        load_kubeconfig(environ={"HOME": str(tmp_path)})


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = TokenFile(path)
    assert source.read() == "first"
    path.write_text("second-token\n")
    assert source.read() == "second-token"
    path.write_text("")
    with pytest.raises(CredentialError, match="empty"):
        source.read()


EXEC = ExecConfig("plugin", (), (), "client.authentication.k8s.io/v1", "", False, "Never", "x")


def test_exec_credential_parsing() -> None:
    doc = (b'{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",'
           b'"status":{"token":"abc","expirationTimestamp":"2030-01-02T03:04:05Z"}}')
    credential = parse_exec_credential(doc, EXEC)
    assert credential.token == "abc"
    assert credential.expires == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (b"nope", "not JSON"),
        (b'{"kind":"Other"}', "not an ExecCredential"),
        (b'{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1",'
         b'"status":{"token":"a"}}', "apiVersion"),
        (b'{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",'
         b'"status":{}}', "neither a token"),
        (b'{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",'
         b'"status":{"clientCertificateData":"x"}}', "without its key"),
        (b'{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",'
         b'"status":{"token":"a","expirationTimestamp":"soon"}}', "expirationTimestamp"),
    ],
)
def test_bad_exec_credential(doc: bytes, problem: str) -> None:
    with pytest.raises(CredentialError, match=problem):
        parse_exec_credential(doc, EXEC)


@pytest.mark.parametrize(
    ("status", "message", "reason", "expected"),
    [
        (401, "Unauthorized", "Unauthorized", Unauthorized),
        (403, 'pods "p" is forbidden: User "u" cannot create resource "pods/exec"', "Forbidden",
         Forbidden),
        (404, 'pods "p" not found', "NotFound", PodNotFound),
        (404, "the server could not find the requested resource", "NotFound", NotFound),
        (400, "container x is not valid for pod p", "BadRequest", ContainerNotFound),
        (500, 'container not found ("x")', "", ContainerNotRunning),
        (400, "cannot exec into a container in a completed pod; current phase is Succeeded",
         "BadRequest", ContainerNotRunning),
    ],
)
def test_api_errors_are_typed(status: int, message: str, reason: str, expected: type) -> None:
    error = api_error(status, message, reason)
    assert type(error) is expected
    assert (error.status, error.message, error.reason) == (status, message, reason)


def test_default_container_as_kubectl_picks_it() -> None:
    from muxstream.kube._api import default_container

    pod: dict[str, object] = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "app"}},
        "spec": {"containers": [{"name": "istio-proxy"}, {"name": "app"}]},
        "status": {"phase": "Running"},
    }
    assert default_container(pod) == ("app", ["istio-proxy", "app"], True)
    pod["metadata"] = {"annotations": {"kubectl.kubernetes.io/default-container": "gone"}}
    assert default_container(pod) == ("istio-proxy", ["istio-proxy", "app"], False)
    pod["status"] = {"phase": "Succeeded"}
    with pytest.raises(ContainerNotRunning, match="completed pod"):
        default_container(pod)


@pytest.mark.parametrize(
    ("server", "env", "expected"),
    [
        ("https://api.example.com", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
        ("https://api.example.com", {"https_proxy": "http://p:1"}, "http://p:1"),
        ("http://api.example.com", {"HTTPS_PROXY": "p:1"}, None),
        ("http://api.example.com", {"HTTP_PROXY": "p:1"}, "http://p:1"),
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": "p:1"}, None),
        ("https://localhost:6443", {"HTTPS_PROXY": "p:1"}, None),
        ("https://api.example.com", {"HTTPS_PROXY": "p:1", "NO_PROXY": "*"}, None),
        ("https://api.example.com", {"HTTPS_PROXY": "p:1", "NO_PROXY": "x.org, example.com"},
         None),
        ("https://example.com", {"HTTPS_PROXY": "p:1", "NO_PROXY": ".example.com"}, "http://p:1"),
        ("https://a.example.com", {"HTTPS_PROXY": "p:1", "NO_PROXY": ".example.com"}, None),
        ("https://api.example.com:6443", {"HTTPS_PROXY": "p:1", "no_proxy": "example.com:443"},
         "http://p:1"),
        ("https://10.1.2.3", {"HTTPS_PROXY": "p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://11.1.2.3", {"HTTPS_PROXY": "p:1", "NO_PROXY": "10.0.0.0/8"}, "http://p:1"),
    ],
)
def test_proxy_from_environment_as_go(
    server: str, env: dict[str, str], expected: str | None
) -> None:
    from muxstream.kube._endpoint import proxy_from_environment

    assert proxy_from_environment(server, env) == expected
