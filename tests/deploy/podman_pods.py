"""A pod template of deploy/, played by podman: the `podman run` arguments that give one container
what the kubelet would, and the list of what podman cannot give it.

Why not `podman kube play`: podman 4.3's play takes no Deployment-level ConfigMap lookups for
`configMapKeyRef` without extra files, no `fieldRef` to spec.nodeName, runs every pod in its own
network namespace with an infra container, and reports nothing about the fields it skips. Here every
field of the pod spec and of the container is either translated or named in `NOT_PLAYED` with
what the test does instead, and an unknown field is an error, so a manifest change cannot slip
past the runtime test unplayed. docs/images.md lists the same differences (a test keeps them equal).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Fields of a pod spec or container podman does not play, and what stands in for them. Keys are
#: "pod.<field>" or "container.<field>" (or a finer path); the text is what docs/images.md says.
NOT_PLAYED = {
    "pod.serviceAccountName": "no API server credentials are mounted: the scheduler gets a kubeconfig "
                              "for the test's API server (KUBECONFIG) instead of the service-account token; the "
                              "exporter gets none and labels pods by UID only",
    "pod.automountServiceAccountToken": "as serviceAccountName",
    "pod.tolerations": "no scheduling: the container runs on this machine",
    "pod.affinity": "no scheduling: the container runs on this machine",
    "pod.hostNetwork": "the pod network is replaced by the host network (the API server, Prometheus and "
                       "the test's clients are on the host), so the listening ports are moved to free ones",
    "pod.securityContext.fsGroup": "no fsGroup in podman: the test creates the Secret's files with the "
                                   "kubelet's ownership (group = fsGroup, defaultMode)",
    "pod.securityContext.fsGroupChangePolicy": "as fsGroup: podman changes no volume's ownership, so there "
                                               "is no change to skip",
    "pod.securityContext.seccompProfile": "RuntimeDefault: podman's default profile (containers-common 0.50) "
                                          "allows bpf() and perf_event_open() only with CAP_SYS_ADMIN, so the "
                                          "exporter falls back to procfs under it; the eBPF test plays "
                                          "RuntimeDefault as that profile plus containerd's rule for the two "
                                          "(allowed with CAP_BPF / CAP_PERFMON)",
    "container.securityContext.seccompProfile": "as pod.securityContext.seccompProfile",
    "container.securityContext.runAsNonRoot": "checked by the translator as the kubelet does (the uid must not be 0)",
    "container.ports": "host network: nothing to publish; the port variables are set to free ports",
    "container.imagePullPolicy": "the images are local (make images); nothing is pulled",
    "container.resources.requests": "no scheduler: requests are not enforced by a runtime anyway",
    "container.startupProbe": "podman runs no HTTP probes: the test polls the same paths with deadlines",
    "container.livenessProbe": "as startupProbe",
    "container.readinessProbe": "as startupProbe",
    "volume.emptyDir": "a tmpfs of the same sizeLimit (the kubelet uses node disk unless medium: Memory)",
    "volume.secret": "a directory the test writes in the kubelet's layout (..data symlink swapped atomically)",
    "volume.hostPath.state": "the writable hostPath (/var/lib/ksense) is a temporary directory, not the machine's",
    "capability.unavailable": "a capability this machine's own bounding set lacks cannot be granted "
                              "(sandboxes without CAP_SYS_RESOURCE): it is left out and the test says so",
}

#: podman's RuntimeDefault profile (Debian's containers-common).
PODMAN_SECCOMP = Path("/usr/share/containers/seccomp.json")
#: What containerd's and moby's default profiles add for these two system calls (and podman's lacks).
CONTAINERD_BPF_RULES = (
    {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_BPF"]}},
    {"names": ["perf_event_open"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_PERFMON"]}},
)


def containerd_like_seccomp(dest: Path) -> Path:
    """podman's default profile with bpf() and perf_event_open() handled as containerd's default
    profile does: allowed to a holder of CAP_BPF / CAP_PERFMON (podman's allows them only with
    CAP_SYS_ADMIN and answers EPERM otherwise)."""
    profile = json.loads(PODMAN_SECCOMP.read_text())
    bpf = {"bpf", "perf_event_open"}
    rules = []
    for rule in profile["syscalls"]:
        if bpf & set(rule["names"]) and rule.get("action") == "SCMP_ACT_ERRNO":
            rule = {**rule, "names": [n for n in rule["names"] if n not in bpf]}
            if not rule["names"]:
                continue
        rules.append(rule)
    profile["syscalls"] = rules + [dict(r) for r in CONTAINERD_BPF_RULES]
    dest.write_text(json.dumps(profile))
    return dest


_POD_FIELDS = {"containers", "volumes", "hostPID", "securityContext", "terminationGracePeriodSeconds",
               "serviceAccountName", "automountServiceAccountToken", "tolerations", "affinity", "hostNetwork"}
_CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "ports", "env", "securityContext",
                     "resources", "startupProbe", "livenessProbe", "readinessProbe", "volumeMounts"}
_SECURITY_FIELDS = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy", "seccompProfile",
                    "privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"}


@dataclass
class Played:
    """What `podman run` gets, and which pod-spec fields it could not express (keys of NOT_PLAYED)."""

    args: list[str]
    not_played: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, key: str, detail: str = "") -> None:
        assert key in NOT_PLAYED, key
        if key not in self.not_played:
            self.not_played.append(key)
        if detail:
            self.notes.append(f"{key}: {detail}")


def _config_maps(objects: tuple[dict, ...]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}


def image_ref(image: str) -> str:
    """A short name of the manifests as the local store holds it (podman would otherwise ask a registry)."""
    return image if "/" in image else f"localhost/{image}"


def play(pod: dict, objects: tuple[dict, ...], *, name: str, field_refs: Mapping[str, str],
         env: Mapping[str, str] = {}, secrets: Mapping[str, Path] = {}, host_paths: Mapping[str, Path] = {},
         caps_available: frozenset[str] | None = None, drop_caps: tuple[str, ...] = (),
         extra_mounts: Mapping[str, Path] = {}, runtime_default: Path | None = None) -> Played:
    """`podman run` arguments for the single container of `pod` (a pod template's spec).

    env: variables the test overrides (ports moved for the host network, in-cluster URLs), each
    applied after the manifest's. secrets: Secret volume name -> directory holding its files.
    host_paths: hostPath volume name -> a directory standing in for it. caps_available: the
    capabilities this machine can grant (None: all). drop_caps: capabilities the test removes
    from the manifest's list (to see the failure). extra_mounts: container path -> host file or
    directory mounted read-only (a kubeconfig). runtime_default: the seccomp profile that plays
    RuntimeDefault (None: podman's own).
    """
    unknown = set(pod) - _POD_FIELDS
    assert not unknown, f"pod fields nobody translated: {sorted(unknown)}"
    (c,) = pod["containers"]
    unknown = set(c) - _CONTAINER_FIELDS
    assert not unknown, f"container fields nobody translated: {sorted(unknown)}"
    played = Played(["--name", name, "--network", "host", "--pull", "never"])
    args = played.args
    for key in ("serviceAccountName", "tolerations", "affinity"):
        if key in pod:
            played.note(f"pod.{key}")
    if pod.get("automountServiceAccountToken", True) and "serviceAccountName" in pod:
        played.note("pod.automountServiceAccountToken")
    played.note("pod.hostNetwork")
    if pod.get("hostPID"):
        args += ["--pid", "host"]
    if "terminationGracePeriodSeconds" in pod:
        args += ["--stop-timeout", str(pod["terminationGracePeriodSeconds"])]

    pod_sc, c_sc = pod.get("securityContext", {}), c.get("securityContext", {})
    for sc in (pod_sc, c_sc):
        unknown = set(sc) - _SECURITY_FIELDS
        assert not unknown, f"securityContext fields nobody translated: {sorted(unknown)}"
    sc = {**pod_sc, **c_sc}
    for key in ("fsGroup", "fsGroupChangePolicy"):
        if key in pod_sc:
            played.note(f"pod.securityContext.{key}")
    for where, ctx in (("pod", pod_sc), ("container", c_sc)):
        profile = ctx.get("seccompProfile", {}).get("type")
        if profile == "RuntimeDefault":
            played.note(f"{where}.securityContext.seccompProfile",
                        f"RuntimeDefault = {runtime_default or 'podman default'}")
        elif profile is not None:
            raise AssertionError(f"seccomp profile {profile} not translated")
    if runtime_default is not None and any(
            ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault" for ctx in (pod_sc, c_sc)):
        args += ["--security-opt", f"seccomp={runtime_default}"]
    if "runAsUser" in sc:
        args += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    if sc.get("runAsNonRoot"):
        assert sc.get("runAsUser", 0) != 0, "runAsNonRoot with uid 0: the kubelet refuses to start it"
        played.note("container.securityContext.runAsNonRoot")
    if sc.get("privileged"):
        args.append("--privileged")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        # The kubelet mounts nothing writable on its own: no tmpfs on /tmp, /run, /var/tmp.
        args += ["--read-only", "--read-only-tmpfs=false"]
    caps = sc.get("capabilities", {})
    if [d.upper() for d in caps.get("drop", [])] == ["ALL"]:
        args += ["--cap-drop", "all"]
    else:
        assert not caps.get("drop"), "only drop: [ALL] is translated"
    for cap in caps.get("add", []):
        if cap in drop_caps:
            continue
        if caps_available is not None and cap not in caps_available:
            played.note("capability.unavailable", f"CAP_{cap} left out")
            continue
        args += ["--cap-add", cap]

    for key in ("ports", "imagePullPolicy", "startupProbe", "livenessProbe", "readinessProbe"):
        if key in c:
            played.note(f"container.{key}")
    resources = c.get("resources", {})
    if "requests" in resources:
        played.note("container.resources.requests")
    limits = resources.get("limits", {})
    if "memory" in limits:
        args += ["--memory", _bytes(limits["memory"])]
    if "cpu" in limits:
        args += ["--cpus", _cpus(limits["cpu"])]

    config_maps = _config_maps(objects)
    values: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            values[e["name"]] = e["value"]
        elif "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            values[e["name"]] = config_maps[ref["name"]][ref["key"]]
        elif "fieldRef" in e["valueFrom"]:
            values[e["name"]] = field_refs[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"env source of {e['name']} not translated")
    values.update(env)
    for key, value in values.items():
        args += ["--env", f"{key}={value}"]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v, ro = volumes[m["name"]], ",ro" if m.get("readOnly") else ""
        target = m["mountPath"]
        if "hostPath" in v:
            source = host_paths.get(m["name"])
            if source is not None:
                played.note("volume.hostPath.state", f"{v['hostPath']['path']} -> {source}")
            else:
                source = Path(v["hostPath"]["path"])
                assert source.is_dir(), f"hostPath {source} (type {v['hostPath'].get('type')}) missing on this machine"
            args += ["--mount", f"type=bind,source={source},destination={target}{ro}"]
        elif "emptyDir" in v:
            size = v["emptyDir"].get("sizeLimit")
            if v["emptyDir"].get("medium") != "Memory":
                played.note("volume.emptyDir")
            opts = f",tmpfs-size={_bytes(size)}" if size else ""
            args += ["--mount", f"type=tmpfs,destination={target},tmpfs-mode=0777{opts}"]
        elif "secret" in v:
            played.note("volume.secret")
            source = secrets.get(m["name"])
            if source is None:
                assert v["secret"].get("optional"), f"secret volume {m['name']} needs its files"
                continue
            args += ["--mount", f"type=bind,source={source},destination={target}{ro}"]
        else:
            raise AssertionError(f"volume {m['name']} of a kind not translated: {sorted(v)}")
    for target, source in extra_mounts.items():
        args += ["--mount", f"type=bind,source={source},destination={target},ro"]

    args.append(image_ref(c["image"]))
    if "command" in c:
        # Kubernetes' command replaces the image's ENTRYPOINT and drops its CMD; so does an
        # --entrypoint given as a JSON list, with the arguments after the image.
        args[-1:-1] = ["--entrypoint", json.dumps(c["command"])]
        args += c.get("args", [])
    else:
        args += c.get("args", [])
    return played


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> str:
    for unit, factor in _UNITS.items():
        if quantity.endswith(unit):
            return str(int(float(quantity[: -len(unit)]) * factor))
    return str(int(quantity))


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else str(float(quantity))
