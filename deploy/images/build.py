"""`make images`: build ksense's three images with buildah and print each one's size and layers.

    .venv/bin/python deploy/images/build.py [--base local|REF] [--push REGISTRY/PATH]

Images: ksense-exporter and ksense-scorer (the two targets of Dockerfile) and ksense-scheduler
(Dockerfile.scheduler), tagged with the version in pyproject.toml — the references deploy/ uses.

Base: each Dockerfile's default public base, pulled if missing; when no registry answers (or
with `--base local`, or KSENSE_BASE_IMAGE=local), the local Debian base deploy/images/base.sh
builds and caches. The machine's settings reach the build only as build-time mounts and secrets,
never a layer: its CA bundle (secret ca_bundle: pip behind a TLS-intercepting proxy), a pip
configuration named by KSENSE_PIP_CONF (secret pip_conf), and, on the local base (which has no
apt sources of its own), the machine's apt sources.

An image is rebuilt only when its inputs change: their hash (Dockerfile, base image id, the files
the build copies) is a second tag of the image (`<name>:inputs-<hash>`) and looked up first (a
label would not do: buildah's layer cache reuses a cached image with the old label); buildah's
layer cache covers partial changes. The engine's settings come from deploy/images/containers.conf
(CONTAINERS_CONF) unless CONTAINERS_CONF is set.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOCAL = "local"
#: The directories the builds copy from the context: the .dockerignore allow-list (`!dir/`).
CONTEXT = tuple(line[1:].strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.startswith("!"))
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
APT_SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")


def version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    target: str | None
    default_base: str

    @property
    def ref(self) -> str:
        return f"localhost/{self.name}:{version()}"

    def inputs_ref(self, inputs: str) -> str:
        """The same image tagged with its inputs' hash: present = up to date."""
        return f"localhost/{self.name}:inputs-{inputs}"


IMAGES = (
    Image("ksense-exporter", "Dockerfile", "exporter", "debian:12.12-slim"),
    Image("ksense-scorer", "Dockerfile", "scorer", "debian:12.12-slim"),
    Image("ksense-scheduler", "Dockerfile.scheduler", None, "python:3.11.13-slim-bookworm"),
)


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(HERE / "containers.conf"))}


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=engine_env(), check=check)


def image_id(ref: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def size_and_layers(ref: str) -> tuple[int, int]:
    out = podman("image", "inspect", "--format", "{{.Size}} {{len .RootFS.Layers}}", ref).stdout.split()
    return int(out[0]), int(out[1])


@functools.cache
def local_base() -> str:
    done = subprocess.run([str(HERE / "base.sh")], stdout=subprocess.PIPE, text=True, env=engine_env())
    if done.returncode != 0:
        sys.exit("images: deploy/images/base.sh failed (see above)")
    return done.stdout.strip()


@functools.cache
def resolve_base(default: str, wanted: str | None) -> tuple[str, bool]:
    """(base reference, whether it is the local Debian base)."""
    if wanted == LOCAL:
        return local_base(), True
    ref = wanted or default
    if image_id(ref) is None:
        pulled = podman("pull", "--quiet", ref, check=False)
        if pulled.returncode != 0:
            if wanted:
                sys.exit(f"images: cannot pull {ref}: {pulled.stderr.strip()}")
            print(f"images: {ref} cannot be pulled ({pulled.stderr.strip().splitlines()[-1]}); "
                  "using the local Debian base (deploy/images/base.sh)", file=sys.stderr)
            return local_base(), True
    return ref, False


def inputs_hash(image: Image, base_id: str) -> str:
    h = hashlib.sha256()
    h.update((REPO / image.dockerfile).read_bytes())
    h.update(base_id.encode())
    for top in CONTEXT:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def build_args(image: Image, base: str, is_local: bool, iidfile: Path) -> list[str]:
    args = ["buildah", "bud", "--isolation", "chroot", "--layers", "--quiet", "--iidfile", str(iidfile),
            "-f", image.dockerfile,
            "--build-arg", f"BASE_IMAGE={base}", "--label", f"org.opencontainers.image.version={version()}"]
    if image.target:
        args += ["--target", image.target]
    ca = os.environ.get("PIP_CERT") or next((c for c in CA_BUNDLES if Path(c).is_file()), None)
    if ca:
        args += ["--secret", f"id=ca_bundle,src={ca}"]
    if os.environ.get("KSENSE_PIP_CONF"):
        args += ["--secret", f"id=pip_conf,src={os.environ['KSENSE_PIP_CONF']}"]
    if is_local:
        args += [f"--volume={p}:{p}:ro" for p in APT_SOURCES if Path(p).exists()]
    return [*args, "."]


def build(image: Image, wanted_base: str | None) -> dict:
    base, is_local = resolve_base(image.default_base, wanted_base)
    inputs = inputs_hash(image, image_id(base) or base)
    started = time.monotonic()
    built = image_id(image.inputs_ref(inputs))
    fresh = built is None
    if fresh:
        print(f"images: building {image.ref} on {base}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            # Tagged by the id this build wrote, never by name: another build in the same store
            # may move the name in between.
            iid = Path(tmp) / "iid"
            done = subprocess.run(build_args(image, base, is_local, iid), cwd=REPO, env=engine_env(),
                                  stdout=subprocess.DEVNULL)
            if done.returncode != 0:
                sys.exit(f"images: building {image.ref} failed")
            built = iid.read_text().strip().removeprefix("sha256:")
        for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}", f"localhost/{image.name}").stdout.split():
            if ":inputs-" in old:
                podman("untag", old, old, check=False)
        podman("tag", built, image.inputs_ref(inputs))
    if image_id(image.ref) != built:
        podman("tag", built, image.ref)
    size, layers = size_and_layers(image.ref)
    return {"ref": image.ref, "base": base, "size": size, "layers": layers, "built": fresh,
            "seconds": time.monotonic() - started}


def push(registry: str) -> None:
    for image in IMAGES:
        target = f"{registry.rstrip('/')}/{image.name}:{version()}"
        podman("tag", image.ref, target)
        print(f"images: pushing {target}", file=sys.stderr)
        if subprocess.run(["podman", "push", target], env=engine_env()).returncode != 0:
            sys.exit(f"images: pushing {target} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=os.environ.get("KSENSE_BASE_IMAGE") or None,
                        help="base image for every image: 'local' (deploy/images/base.sh) or a reference "
                             "(KSENSE_BASE_IMAGE; default: each Dockerfile's own, else local)")
    parser.add_argument("--push", metavar="REGISTRY/PATH", help="then tag and push the images there")
    args = parser.parse_args(argv)
    for tool in ("podman", "buildah"):
        if shutil.which(tool) is None:
            sys.exit(f"images: {tool} is missing (scripts/setup.sh installs podman, buildah, runc, debootstrap)")
    results = [build(image, args.base) for image in IMAGES]
    print(f"{'image':36} {'size':>9} {'layers':>6}  {'':8} base")
    for r in results:
        state = f"{r['seconds']:.0f} s" if r["built"] else "cached"
        print(f"{r['ref']:36} {r['size'] / 1e6:6.0f} MB {r['layers']:>6}  {state:8} {r['base']}")
    if args.push:
        push(args.push)
    return 0


if __name__ == "__main__":
    sys.exit(main())
