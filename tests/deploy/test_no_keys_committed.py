"""No private key or certificate anywhere in the repository (the prototype committed its keys:
docs/operations.md#what-the-prototype-did-wrong). Every file under the repository is scanned —
tracked, untracked and ignored alike —
except the virtualenvs, git's own store and tool caches; any PEM private key or certificate
block fails. Test certificates are made at run time (trustme, the TLS script's --dry-run into
a temporary directory), never stored."""

from __future__ import annotations

import os
import re

from tests.deploy.manifests import REPO

DASHES = "-" * 5  # assembled, so this file holds no PEM marker itself
_LABELS = r"(?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY|CERTIFICATE|TRUSTED CERTIFICATE"
PEM = re.compile(rf"{DASHES}BEGIN ({_LABELS}){DASHES}".encode())
SKIP_DIRS = {".venv", ".uv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
             ".import_linter_cache", "node_modules"}
MAX_BYTES = 50 * 1024 * 1024


def _files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            yield os.path.join(root, name)


def test_no_pem_key_or_certificate_in_the_repository():
    found = []
    scanned = 0
    for path in _files():
        try:
            if os.path.islink(path) or os.path.getsize(path) > MAX_BYTES:
                continue
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        scanned += 1
        match = PEM.search(data)
        if match:
            found.append(f"{os.path.relpath(path, REPO)}: {match.group(1).decode()}")
    assert scanned > 50
    assert found == []


def test_gitignore_keeps_keys_out():
    ignored = (REPO / ".gitignore").read_text().split()
    assert {"*.pem", "*.key", "*.crt"} <= set(ignored)


def test_the_pattern_catches_keys_and_certificates():
    for label in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "CERTIFICATE"):
        assert PEM.search(f"x\n{DASHES}BEGIN {label}{DASHES}\nMII".encode())
    assert not PEM.search(f"{DASHES}BEGIN PUBLIC KEY{DASHES}".encode())
