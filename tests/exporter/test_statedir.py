"""The state directory and the baseline in it are trusted only when they are ours alone (issue
#10): a directory or a baseline.json another local user planted is refused, with the reason
logged; ours is restored, by the store and by the real exporter. Planting needs root (chown),
which CI has."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import urllib.request
from pathlib import Path

import pytest

from common import names
from exporter import config, statedir
from exporter.baseline_store import FILE_NAME, MAX_FILE_BYTES, BaselineStore
from exporter.core.baseline import freeze
from exporter.core.derive import Calibration, DeriveParams
from exporter.core.ownership import ancestor_problem, own_problem, writable_by
from tests.conftest import require
from tests.exporter.test_baseline_store import Clock, X
from tests.exporter.test_metrics_flood import clean_env, spawn
from tests.support import free_port, wait_for

OTHER = 65534  # `nobody`: another local user, as far as a root test is concerned


@pytest.fixture
def as_root():
    require(os.geteuid() == 0, "planting a file as another user needs root (chown)")


def saved(state: Path, clock: Clock) -> BaselineStore:
    store = BaselineStore(state, DeriveParams(), now=clock)
    assert store.save(Calibration(baseline=freeze(X), k=2.5, fcal=0.3)) is None
    return store


# --- the pure rules ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uid", "mode", "problem"),
    [
        (0, stat.S_IFDIR | 0o755, None),
        (1000, stat.S_IFDIR | 0o700, None),
        (0, stat.S_IFDIR | 0o1777, None),  # /tmp: sticky
        (0, stat.S_IFDIR | 0o777, "writable by group or others"),
        (0, stat.S_IFDIR | 0o775, "writable by group or others"),
        (4242, stat.S_IFDIR | 0o755, "owned by uid 4242"),
    ],
)
def test_ancestor_rules(uid, mode, problem):
    got = ancestor_problem(uid, mode, us=1000)
    assert (got is None) if problem is None else (problem in got)


@pytest.mark.parametrize(
    ("uid", "mode", "kind", "problem"),
    [
        (1000, stat.S_IFDIR | 0o700, "directory", None),
        (1000, stat.S_IFREG | 0o644, "file", None),
        (0, stat.S_IFDIR | 0o700, "directory", "owned by uid 0"),
        (1000, stat.S_IFDIR | 0o1777, "directory", "writable by group or others"),
        (1000, stat.S_IFREG | 0o666, "file", "writable by group or others"),
        (1000, stat.S_IFLNK | 0o777, "file", "a symbolic link"),
        (1000, stat.S_IFIFO | 0o600, "file", "not a regular file"),
        (1000, stat.S_IFREG | 0o600, "directory", "not a directory"),
    ],
)
def test_own_rules(uid, mode, kind, problem):
    got = own_problem(uid, mode, us=1000, kind=kind)
    assert (got is None) if problem is None else (problem in got)


# --- planted files and directories -----------------------------------------------------------
def test_our_baseline_is_restored(tmp_path):
    clock = Clock()
    saved(tmp_path / "state", clock)
    got, warning = BaselineStore(tmp_path / "state", DeriveParams(), now=clock).load()
    assert warning is None and got is not None and got.k == 2.5


def test_a_baseline_planted_by_another_user_is_refused(tmp_path, as_root):
    clock = Clock()
    store = saved(tmp_path / "state", clock)
    os.chown(store.path, OTHER, OTHER)
    got, warning = BaselineStore(tmp_path / "state", DeriveParams(), now=clock).load()
    assert got is None and f"owned by uid {OTHER}, not by us (uid 0)" in warning


def test_a_state_directory_made_by_another_user_is_refused_for_reading_and_writing(tmp_path, as_root):
    clock = Clock()
    store = saved(tmp_path / "state", clock)
    os.chown(tmp_path / "state", OTHER, OTHER)
    got, warning = BaselineStore(tmp_path / "state", DeriveParams(), now=clock).load()
    assert got is None and f"the state directory {tmp_path / 'state'} is owned by uid {OTHER}" in warning
    assert "owned by uid" in store.save(Calibration(baseline=freeze(X)))
    assert statedir.prepare(tmp_path / "state", 0, 0) is not None


def test_a_parent_another_user_owns_makes_the_directory_untrusted(tmp_path, as_root):
    planted = tmp_path / "ksense"
    planted.mkdir()
    os.chown(planted, OTHER, OTHER)
    problem = statedir.prepare(planted / "state", 0, 0)
    assert problem is not None and f"{planted} (above {planted / 'state'}) is owned by uid {OTHER}" in problem


def test_a_world_writable_directory_is_untrusted_unless_sticky_above(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    assert "writable by group or others" in statedir.problem(state, us=os.geteuid())
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)
    assert "writable by group or others" in statedir.prepare(open_parent / "state", os.geteuid(), os.getegid())
    open_parent.chmod(0o1777)
    assert statedir.prepare(open_parent / "state", os.geteuid(), os.getegid()) is None


def test_symbolic_links_and_fifos_are_not_followed(tmp_path):
    clock = Clock()
    real = saved(tmp_path / "real", clock)
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    assert "a symbolic link" in BaselineStore(tmp_path / "linked", DeriveParams(), now=clock).load()[1]
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).symlink_to(real.path)
    assert "it is a symbolic link" in BaselineStore(state, DeriveParams(), now=clock).load()[1]
    (state / FILE_NAME).unlink()
    os.mkfifo(state / FILE_NAME)  # a FIFO would block a plain open
    assert "not a regular file" in BaselineStore(state, DeriveParams(), now=clock).load()[1]


def test_prepare_gives_a_new_or_root_left_directory_to_the_unprivileged_uid(as_root):
    # Under a directory nobody can traverse the handover could not be used; make one it can.
    base = Path(tempfile.mkdtemp(prefix="ksense-statedir-"))
    try:
        base.chmod(0o755)
        assert statedir.prepare(base / "a" / "state", OTHER, OTHER) is None
        st = os.stat(base / "a" / "state")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER, OTHER, 0o700)
        assert os.stat(base / "a").st_uid == 0  # parents stay root's
        # An earlier exporter ran as root: its directory and baseline are handed over.
        old = base / "old"
        old.mkdir(mode=0o755)
        (old / FILE_NAME).write_text("{}")
        assert statedir.prepare(old, OTHER, OTHER, hand_over=(FILE_NAME,)) is None
        assert os.stat(old).st_uid == OTHER and os.stat(old / FILE_NAME).st_uid == OTHER
        # Another user's directory is not taken over.
        theirs = base / "theirs"
        theirs.mkdir()
        os.chown(theirs, 4242, 4242)
        assert "owned by uid 4242" in statedir.prepare(theirs, OTHER, OTHER)
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize(
    ("owner", "group", "mode", "writable"),
    [
        (1000, 1000, 0o755, True),
        (1000, 1000, 0o555, False),
        (0, 1000, 0o775, True),
        (0, 0, 0o755, False),
        (0, 0, 0o1777, True),
        (0, 0, 0o1776, False),  # no search bit
    ],
)
def test_writable_by(owner, group, mode, writable):
    assert writable_by(owner, group, mode, uid=1000, gid=1000) is writable


def test_the_csv_directory_is_made_for_the_unprivileged_uid_but_never_taken_over(as_root):
    base = Path(tempfile.mkdtemp(prefix="ksense-output-"))
    try:
        assert statedir.prepare_output(base / "new" / "csv", OTHER, OTHER) is None
        st = os.stat(base / "new" / "csv")
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (OTHER, 0o755)
        (base / "shared").mkdir(mode=0o755)  # e.g. a /tmp/ksense a root scorer made first
        assert "not writable by uid 65534 (owner 0:0, mode 0755)" in statedir.prepare_output(base / "shared", OTHER,
                                                                                              OTHER)
        assert os.stat(base / "shared").st_uid == 0
    finally:
        shutil.rmtree(base)


# --- content shape and ranges --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d["X"][0].__setitem__(0, -1.0), "finite durations"),
        (lambda d: d.__setitem__("fcal", -0.5), "fcal is not a friction"),
        (lambda d: d.__setitem__("k", 0), "k is not a positive number"),
    ],
)
def test_out_of_range_content_is_refused(tmp_path, edit, problem):
    clock = Clock()
    store = saved(tmp_path / "state", clock)
    doc = json.loads(store.path.read_text())
    edit(doc)
    store.path.write_text(json.dumps(doc))
    got, warning = BaselineStore(tmp_path / "state", DeriveParams(), now=clock).load()
    assert got is None and problem in warning


def test_an_oversized_file_is_refused_without_being_parsed(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b" " * (MAX_FILE_BYTES + 1))
    got, warning = BaselineStore(state, DeriveParams(), now=Clock()).load()
    assert got is None and f"larger than {MAX_FILE_BYTES} bytes" in warning


# --- the real exporter ---------------------------------------------------------------------------
NODE = "statedir-node"


def plant_baseline(state: Path, owner: int) -> None:
    """A valid baseline for `python -m exporter --source procfs` with the default settings, in
    `state`, both owned by `owner`."""
    cfg = config.from_env({"KSENSE_NODE_NAME": NODE, "KSENSE_SOURCE": "procfs"})
    params = DeriveParams(warmup_s=cfg.warmup_s, baseline_win=cfg.baseline_win, min_count=cfg.baseline_min_count)
    store = BaselineStore(state, params, context={"source": "procfs", "interval_s": cfg.interval_s, "node": NODE})
    assert store.save(Calibration(baseline=freeze(X), k=2.5, fcal=0.3)) is None
    os.chown(state, owner, owner)
    os.chown(store.path, owner, owner)


@pytest.mark.parametrize(
    ("run_as", "dir_owner", "file_owner", "restored", "logged"),
    [
        (None, OTHER, OTHER, True, "event=baseline_restored"),  # ours: the default uid
        (None, OTHER, 4242, False, "owned by uid 4242, not by us (uid 65534)"),
        ("0", 0, OTHER, False, f"owned by uid {OTHER}, not by us (uid 0)"),
        (None, 4242, 4242, False, "event=state_dir_rejected"),
    ],
    ids=["ours", "planted-file", "planted-file-root", "planted-dir"],
)
def test_the_exporter_restores_its_own_baseline_only(as_root, tmp_path, run_as, dir_owner, file_owner, restored,
                                                     logged):
    base = Path(tempfile.mkdtemp(prefix="ksense-statedir-"))  # reachable by 65534, unlike tmp_path
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        plant_baseline(state, 0)
        os.chown(state, dir_owner, dir_owner)
        os.chown(state / FILE_NAME, file_owner, file_owner)
        port = free_port()
        env = clean_env({"KSENSE_NODE_NAME": NODE, **({"KSENSE_RUN_AS": run_as} if run_as else {})})
        proc = spawn(["-m", "exporter", "--source", "procfs", "--host", "127.0.0.1", "--port", str(port),
                      "--no-csv", "--state-dir", str(state)], env, tmp_path / "exporter.log")
        try:
            frozen = wait_for(lambda: proc.poll() is not None or _frozen(port), 30, "a published interval")
            log = (tmp_path / "exporter.log").read_text()
            assert proc.poll() is None, log
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        assert logged in log
        assert frozen == ("1" if restored else "0"), log
    finally:
        shutil.rmtree(base)


def _frozen(port: int) -> str | None:
    """The value of ksense_baseline_frozen once published."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(rf'^{names.BASELINE_FROZEN.name}{{node="{NODE}"}} (\d)', text, re.M)
    return m.group(1) if m else None
