"""scripts/setup_webhook_tls.sh without a cluster: --dry-run --out DIR makes a CA and a serving
certificate whose SANs cover the scorer Service's names, prints the exact commands and the
caBundle patch, writes keys nowhere but DIR, and is re-runnable. The cluster mode runs against a
fake kubectl (tests/deploy/fake_kubectl.py): Secret applied server-side, caBundle patched, a
second run changes nothing, --renew trusts old and new CA during the rotation."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.deploy.manifests import REPO, SERVICE_DNS_NAMES, build, find

SCRIPT = REPO / "scripts" / "setup_webhook_tls.sh"
PEM_KEY = "-" * 5 + "BEGIN"  # assembled, so this file holds no PEM marker itself


def _run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                            env=env or os.environ.copy())
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def isolated(tmp_path):
    """An environment whose HOME and TMPDIR are empty directories we can inspect afterwards."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    return {**os.environ, "HOME": str(home), "TMPDIR": str(tmp)}, home, tmp


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_dry_run_makes_a_certificate_for_the_service_names(tmp_path, isolated):
    env, home, tmp = isolated
    out = tmp_path / "out"
    result = _run("--dry-run", "--out", str(out), env=env)
    (cert,) = _certs(out / "tls.crt")
    (ca,) = _certs(out / "ca.crt")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(SERVICE_DNS_NAMES)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(ca)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 364
    # The CA key was destroyed after signing; the serving key is private to its owner.
    assert not (out / "ca.key").exists()
    assert (out / "tls.key").stat().st_mode & 0o077 == 0
    # The caBundle patch names the webhook entry of deploy/base and carries exactly the CA.
    patch = json.loads((out / "cabundle-patch.json").read_text())
    entry = find(build("default"), "ValidatingWebhookConfiguration", "ksense-scorer")["webhooks"][0]["name"]
    (hook,) = patch["webhooks"]
    assert hook["name"] == entry
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == (out / "ca.crt").read_bytes()
    # The exact commands, printed and written; no key material on stdout.
    commands = (out / "commands.sh").read_text()
    assert commands in result.stdout
    assert "create secret generic ksense-scorer-tls --type=kubernetes.io/tls" in commands
    assert "apply --server-side" in commands
    assert "patch validatingwebhookconfiguration ksense-scorer --type=strategic" in commands
    assert PEM_KEY not in result.stdout + result.stderr
    # Nothing written outside --out.
    assert list(home.iterdir()) == [] and list(tmp.iterdir()) == []


def test_dry_run_is_re_runnable(tmp_path, isolated):
    env, _, _ = isolated
    out = tmp_path / "out"
    _run("--dry-run", "--out", str(out), env=env)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = _run("--dry-run", "--out", str(out), env=env)
    assert "keeping the current certificate" in second.stdout
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    # Same CA, certificate, key and patch; the commands no longer write the Secret.
    assert {k: v for k, v in after.items() if k != "commands.sh"} == \
        {k: v for k, v in before.items() if k != "commands.sh"}
    assert "create secret" not in after["commands.sh"].decode() and "patch" in after["commands.sh"].decode()
    # --renew: a new pair, and the bundle trusts both CAs for the rotation.
    _run("--dry-run", "--renew", "--out", str(out), env=env)
    assert (out / "tls.crt").read_bytes() != before["tls.crt"]
    bundle = base64.b64decode(json.loads((out / "cabundle-patch.json").read_text())["webhooks"][0]
                              ["clientConfig"]["caBundle"])
    assert bundle == (out / "ca.crt").read_bytes() + before["ca.crt"]


def test_a_certificate_missing_a_name_is_replaced(tmp_path, isolated):
    env, _, _ = isolated
    out = tmp_path / "out"
    _run("--dry-run", "--out", str(out), "--service", "other", env=env)
    result = _run("--dry-run", "--out", str(out), env=env)
    assert "issued a certificate" in result.stdout
    (cert,) = _certs(out / "tls.crt")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(SERVICE_DNS_NAMES)


def test_the_certificate_serves_tls_that_the_ca_bundle_verifies(tmp_path, isolated):
    """What the API server does: verify the scorer's certificate for ksense-scorer.ksense.svc
    against the caBundle."""
    env, _, _ = isolated
    out = tmp_path / "out"
    _run("--dry-run", "--out", str(out), env=env)
    assert isinstance(serialization.load_pem_private_key((out / "tls.key").read_bytes(), None),
                      ec.EllipticCurvePrivateKey)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(out / "tls.crt", out / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(out / "bundle.crt"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="ksense-scorer.ksense.svc") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.send(b"x")
    thread.join(10)
    listener.close()


def test_dry_run_needs_out_and_cluster_mode_refuses_out(tmp_path):
    assert _run("--dry-run", check=False).returncode != 0
    assert _run("--out", str(tmp_path), check=False).returncode != 0


# --- cluster mode against a fake kubectl ---------------------------------------------------------
@pytest.fixture
def fake_cluster(tmp_path, isolated):
    env, _home, tmp = isolated
    hook = find(build("default"), "ValidatingWebhookConfiguration", "ksense-scorer")
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps({"namespaces": ["ksense"], "webhook": hook, "secrets": {}}))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'deploy' / 'fake_kubectl.py'} \"$@\"\n")
    kubectl.chmod(0o755)
    env = {**env, "FAKE_KUBECTL_STATE": str(state), "KUBECTL": str(kubectl)}
    return env, state, tmp


def _state(path: Path) -> dict:
    return json.loads(path.read_text())


def test_cluster_mode_writes_the_secret_and_patches_the_ca_bundle(fake_cluster):
    env, state_path, tmp = fake_cluster
    _run(env=env)
    state = _state(state_path)
    secret = state["secrets"]["ksense/ksense-scorer-tls"]
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert.verify_directly_issued_by(ca)
    bundle = state["webhook"]["webhooks"][0]["clientConfig"]["caBundle"]
    assert base64.b64decode(bundle) == base64.b64decode(secret["data"]["ca.crt"])
    assert state["applies"] == 1 and state["patches"] == 1
    # The Secret went through server-side apply (no last-applied annotation holding the key).
    calls = [json.loads(line) for line in state_path.with_suffix(".log").read_text().splitlines()]
    assert ["apply", "--server-side", "--force-conflicts", "--field-manager=ksense-setup-webhook-tls", "-f", "-"] \
        in calls
    # The private temporary directory is gone.
    assert list(tmp.iterdir()) == []


def test_cluster_mode_is_re_runnable(fake_cluster):
    env, state_path, _ = fake_cluster
    _run(env=env)
    first = _state(state_path)
    second = _run(env=env)
    assert "keeping the current certificate" in second.stdout and "up to date" in second.stdout
    again = _state(state_path)
    assert again["applies"] == 1 and again["patches"] == 1
    assert again["secrets"] == first["secrets"] and again["webhook"] == first["webhook"]


def test_cluster_mode_repairs_a_lost_ca_bundle(fake_cluster):
    env, state_path, _ = fake_cluster
    _run(env=env)
    state = _state(state_path)
    del state["webhook"]["webhooks"][0]["clientConfig"]["caBundle"]  # e.g. webhook deleted and re-created
    state_path.write_text(json.dumps(state))
    _run(env=env)
    state = _state(state_path)
    assert state["applies"] == 1 and state["patches"] == 2
    assert state["webhook"]["webhooks"][0]["clientConfig"]["caBundle"] == \
        state["secrets"]["ksense/ksense-scorer-tls"]["data"]["ca.crt"]


def test_cluster_mode_renew_bundles_both_cas(fake_cluster):
    env, state_path, _ = fake_cluster
    _run(env=env)
    old_ca = base64.b64decode(_state(state_path)["secrets"]["ksense/ksense-scorer-tls"]["data"]["ca.crt"])
    _run("--renew", env=env)
    state = _state(state_path)
    new_ca = base64.b64decode(state["secrets"]["ksense/ksense-scorer-tls"]["data"]["ca.crt"])
    assert new_ca != old_ca
    assert base64.b64decode(state["webhook"]["webhooks"][0]["clientConfig"]["caBundle"]) == new_ca + old_ca
    _run(env=env)  # the next run drops the old CA
    state = _state(state_path)
    assert base64.b64decode(state["webhook"]["webhooks"][0]["clientConfig"]["caBundle"]) == new_ca


def test_cluster_mode_before_apply_says_what_to_do(fake_cluster):
    env, state_path, _ = fake_cluster
    state_path.write_text(json.dumps({"namespaces": [], "webhook": None, "secrets": {}}))
    result = _run(env=env, check=False)
    assert result.returncode != 0
    assert "kubectl apply -k deploy/" in result.stderr


def test_cluster_mode_leaves_cert_manager_alone(fake_cluster):
    env, state_path, _ = fake_cluster
    state = _state(state_path)
    state["webhook"] = find(build("cert-manager"), "ValidatingWebhookConfiguration", "ksense-scorer")
    state_path.write_text(json.dumps(state))
    result = _run(env=env, check=False)
    assert result.returncode != 0 and "cert-manager" in result.stderr
    assert _state(state_path)["secrets"] == {}
