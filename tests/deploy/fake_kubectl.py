"""A stand-in `kubectl` for the TLS script's cluster mode: it keeps one namespace, one
ValidatingWebhookConfiguration and Secrets in a JSON state file ($FAKE_KUBECTL_STATE), answers
exactly the calls scripts/setup_webhook_tls.sh makes, and logs every call. Anything else fails
loudly, so a new call in the script needs a deliberate change here."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_KUBECTL_STATE"])
    state = json.loads(state_path.read_text())
    with open(state_path.with_suffix(".log"), "a") as log:
        log.write(json.dumps(argv) + "\n")
    args = list(argv)
    namespace = None
    if args[:1] == ["-n"]:
        namespace, args = args[1], args[2:]

    def save() -> None:
        state_path.write_text(json.dumps(state))

    def opt(name: str) -> str | None:
        for a in args:
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return args[args.index(name) + 1] if name in args else None

    hook = state.get("webhook")
    match args[:2]:
        case ["get", "namespace"]:
            return 0 if args[2] in state["namespaces"] else _fail(f'namespaces "{args[2]}" not found')
        case ["get", "validatingwebhookconfiguration"]:
            if hook is None or hook["metadata"]["name"] != args[2]:
                return _fail("not found")
            path = opt("-o")
            if path == "name":
                print(f"validatingwebhookconfiguration.admissionregistration.k8s.io/{args[2]}")
            elif path == "jsonpath={.metadata.annotations.cert-manager\\.io/inject-ca-from}":
                print(hook["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from", ""), end="")
            elif path == "jsonpath={.webhooks[*].name}":
                print(" ".join(w["name"] for w in hook["webhooks"]), end="")
            elif path == "jsonpath={.webhooks[*].clientConfig.caBundle}":
                print(" ".join(w["clientConfig"].get("caBundle", "") for w in hook["webhooks"]), end="")
            else:
                return _fail(f"unexpected output {path}")
            return 0
        case ["get", "secret"]:
            secret = state["secrets"].get(f"{namespace}/{args[2]}")
            if secret is None:
                return 0 if "--ignore-not-found" in args else _fail("not found")
            path = opt("-o")
            if path == "name":
                print(f"secret/{args[2]}")
            elif path.startswith("jsonpath={.data."):
                key = path.removeprefix("jsonpath={.data.").removesuffix("}").replace("\\.", ".")
                print(secret["data"].get(key, ""), end="")
            else:
                return _fail(f"unexpected output {path}")
            return 0
        case ["create", "secret"]:
            assert args[2] == "generic" and "--dry-run=client" in args and opt("-o") == "json", args
            data = {}
            for a in args:
                if a.startswith("--from-file="):
                    key, _, file = a.removeprefix("--from-file=").partition("=")
                    data[key] = base64.b64encode(Path(file).read_bytes()).decode()
            print(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": opt("--type"),
                              "metadata": {"name": args[3], "namespace": namespace}, "data": data}))
            return 0
        case ["apply", "--server-side"]:
            obj = json.loads(sys.stdin.read())
            meta = obj["metadata"]
            state["secrets"][f"{meta['namespace']}/{meta['name']}"] = obj
            state["applies"] = state.get("applies", 0) + 1
            save()
            return 0
        case ["patch", "validatingwebhookconfiguration"]:
            assert opt("--type") == "strategic", args
            patch = json.loads(opt("-p"))
            for entry in patch["webhooks"]:
                (target,) = [w for w in hook["webhooks"] if w["name"] == entry["name"]]
                target["clientConfig"].update(entry["clientConfig"])
            state["patches"] = state.get("patches", 0) + 1
            save()
            return 0
    return _fail(f"fake kubectl: unexpected call {argv}")


def _fail(message: str) -> int:
    print(f"Error from server: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
