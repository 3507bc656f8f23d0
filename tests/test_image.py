"""The container image, built from the repository's Containerfile and run as a container engine runs it.

deploy/image/build.sh builds it (or finds it cached) on a base made from Debian's packages, since nothing
can be pulled here. Each container is the image's root filesystem (``buildah mount``) entered with its own
configuration, read from the image: User, Env, WorkingDir and Cmd, the volume, the config file and the
secrets bind-mounted where compose would mount them, in new mount and PID namespaces, so that the command
is PID 1 as under Docker, and on the host's network, as ``buildah run --network host`` would be. The daemon
and the reference receiver both run from the image and deliver a file end to end.

Skipped only when buildah is absent or the suite is not root (mmdebstrap and chroot need root); with
PIMINGESTD_REQUIRE_ALL=1 (set by .ci/run) a skip is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from pimingestd.testing import Cluster, wait_http

from .conftest import MakeCluster
from .helpers import REPO, product, write_json

pytestmark = pytest.mark.timeout(1800)  # a cold build makes the base with mmdebstrap first (minutes)

BUILD = REPO / "deploy" / "image" / "build.sh"
VOLUME = "/var/lib/pimingestd"
SECRET = "s3cr3t-from-a-docker-secret"
TOKEN = "t0ken-from-a-docker-secret"


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    buildah: tuple[str, ...]  # buildah with the build script's store
    config: dict[str, Any]  # the Docker image configuration (User, Env, Cmd, Volumes, Healthcheck...)
    rootfs: Path  # a working container's root filesystem, mounted
    uid: int
    gid: int


def _unavailable() -> str | None:
    if shutil.which("buildah") is None:
        return "buildah is not installed"
    if os.geteuid() != 0:
        return "building and running the image needs root (mmdebstrap, chroot)"
    return None


def _user(rootfs: Path, user: str) -> tuple[int, int]:
    """The image's USER as numbers, from the image's own /etc/passwd (as an engine resolves it)."""
    name, _, group = user.partition(":")
    passwd = {f.split(":")[0]: f.split(":") for f in (rootfs / "etc/passwd").read_text().splitlines() if f}
    groups = {f.split(":")[0]: f.split(":") for f in (rootfs / "etc/group").read_text().splitlines() if f}
    uid = int(name) if name.isdigit() else int(passwd[name][2])
    gid = int(group) if group.isdigit() else int(groups[group][2]) if group else int(passwd[name][3])
    return uid, gid


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    why = _unavailable()
    if why is not None:
        if os.environ.get("PIMINGESTD_REQUIRE_ALL") == "1":
            pytest.fail(f"{why}; PIMINGESTD_REQUIRE_ALL=1 says the image test must run here")
        pytest.skip(why)
    # A session of its own: no signal meant for the build's process group reaches the suite.
    built = subprocess.run(
        [str(BUILD)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHON": sys.executable},  # its pip fetches the locked wheels
    )
    assert built.returncode == 0, built.stderr[-6000:]
    fields = dict(kv.split("=", 1) for kv in built.stdout.strip().splitlines()[-1].split())
    buildah = ("buildah", "--root", fields["root"], "--runroot", fields["runroot"], "--storage-driver", "vfs")
    inspect = subprocess.run([*buildah, "inspect", "--type", "image", fields["image"]], capture_output=True, check=True)
    config = json.loads(inspect.stdout)["Docker"]["config"]
    listed = subprocess.run([*buildah, "containers", "--format", "{{.ContainerName}}"], capture_output=True, text=True)
    for old in listed.stdout.split():  # left by runs that were killed (vfs: a full copy of the image each)
        if old.startswith("pimingestd-test-") and not psutil.pid_exists(int(old.rsplit("-", 1)[1])):
            subprocess.run([*buildah, "rm", old], capture_output=True)
    name = f"pimingestd-test-{os.getpid()}"
    subprocess.run([*buildah, "from", "--pull=never", "--name", name, fields["image"]], capture_output=True, check=True)
    try:
        mounted = subprocess.run([*buildah, "mount", name], capture_output=True, text=True, check=True)
        rootfs = Path(mounted.stdout.strip())
        uid, gid = _user(rootfs, config["User"])
        yield Image(fields["image"], buildah, config, rootfs, uid, gid)
    finally:
        subprocess.run([*buildah, "umount", name], capture_output=True)
        subprocess.run([*buildah, "rm", name], capture_output=True)


# The container's inside, in its own mount namespace: the kernel's file systems, then the mounts, then the
# command as the image's user, in the image's working directory, with only the image's environment.
_ENTER = r"""
set -e
root=$1; shift
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
while [ "$1" != -- ]; do
  src=$1 dst=$root$2 mode=$3; shift 3
  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; touch "$dst"; fi
  mount --bind "$src" "$dst"
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$dst"; fi
done
shift
exec "$@"
"""


def container(
    image: Image,
    mounts: dict[str, tuple[Path, str]],
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    user: tuple[int, int] | None = None,
) -> list[str]:
    """The argv that runs one container of ``image``: ``mounts`` maps a path inside to (host path, "ro"|"rw");
    ``command`` replaces the image's Cmd and ``env`` adds to its Env, as `docker run -e` would; ``user``
    (uid, gid) replaces the image's User, as `docker run --user` would."""
    cfg = image.config
    uid, gid = user or (image.uid, image.gid)
    environment = [*cfg["Env"], *(f"{k}={v}" for k, v in (env or {}).items())]
    binds = [a for inside, (host, mode) in mounts.items() for a in (str(host), inside, mode)]
    return [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
        "sh", "-c", _ENTER, "enter", str(image.rootfs), *binds, "--",
        "chroot", f"--userspec={uid}:{gid}", f"--groups={gid}", str(image.rootfs),
        "/usr/bin/env", "-i", "-C", cfg["WorkingDir"] or "/", *environment, *(command or cfg["Cmd"]),
    ]  # fmt: skip


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A container in the background, its output appended to ``log`` (as the harness's ``spawn``)."""
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def init_of(proc: subprocess.Popen[bytes]) -> psutil.Process:
    """The container's PID 1, seen from the host: the child that unshare forked."""
    (child,) = psutil.Process(proc.pid).children()
    return child


class ImageCluster(Cluster):
    """The harness's cluster with the daemon and the receiver in containers of the image: the daemon's config
    mounted at /etc/pimingestd/config.toml, its state in a volume folder, the secret in /run/secrets."""

    def __init__(self, root: Path, *, image: Image, user: tuple[int, int] | None = None, **sections: Any) -> None:
        super().__init__(
            root,
            daemon={"state_db": f"{VOLUME}/ingestion_state.db", "drain_seconds": 10.0},
            http={"allowed_roots": [f"{VOLUME}/data"]},
            inbox={f"{name}dir": f"{VOLUME}/{name or 'inbox'}" for name in ("", "processing_", "done_", "failed_")},
            **sections,
        )
        self.image = image
        self.user = user  # another uid and gid than the image's User (`docker run --user`)
        self.volume, self.receiver_volume, self.secrets = root / "volume", root / "receiver-volume", root / "secrets"
        made = (image.rootfs / VOLUME.lstrip("/")).stat()
        for folder in (self.volume, self.receiver_volume):
            folder.mkdir()
            os.chown(folder, made.st_uid, made.st_gid)  # as a named volume starts: a copy of the image's folder
            folder.chmod(stat.S_IMODE(made.st_mode))
        self.data = self.volume / "data"
        self.data.mkdir()
        self.state_db = self.volume / "ingestion_state.db"
        self.secrets.mkdir()
        (self.secrets / "pimcore-secret").write_text(SECRET + "\n")  # as `secrets:` mounts a file
        (self.secrets / "api-token").write_text(TOKEN + "\n")
        self.token = TOKEN  # the harness sends it on /api/* calls

    def argv(self, mounts: dict[str, tuple[Path, str]], command: list[str] | None = None) -> list[str]:
        return container(self.image, {**mounts, "/run/secrets": (self.secrets, "ro")}, command, user=self.user)

    def close(self) -> None:
        """Each container's PID 1 first, then unshare. ``unshare --kill-child`` asks the kernel to kill the
        child when unshare dies (PR_SET_PDEATHSIG), but ``chroot --userspec`` changes the child's user and
        group, which clears that request (prctl(2)): killing unshare alone left the daemon and the receiver
        running, reparented to init, after the suite."""
        inits = []
        for p in (self.daemon, self.receiver):
            if p is not None and p.poll() is None:
                with contextlib.suppress(psutil.Error, ValueError):
                    inits.append(init_of(p))
        for init in inits:
            with contextlib.suppress(psutil.Error):
                init.kill()
        super().close()
        psutil.wait_procs(inits, timeout=10)

    async def start_receiver(self) -> None:
        command = ["pimingestd", "receiver", "--port", str(self.rport), "--data", f"{VOLUME}/receiver"]
        receiver = self.receiver = start(
            self.argv({VOLUME: (self.receiver_volume, "rw")}, command), self.root / "receiver.log"
        )
        await wait_http(self.rurl + "/stats", timeout=60, alive=lambda: receiver.poll() is None)

    async def start_daemon(self, env: dict[str, str] | None = None) -> None:
        mounts = {VOLUME: (self.volume, "rw"), "/etc/pimingestd/config.toml": (self.cfg, "ro")}
        daemon = self.daemon = start(self.argv(mounts), self.log)
        await wait_http(self.durl + "/healthz", ok=lambda s: s == 200, timeout=60, alive=lambda: daemon.poll() is None)

    def client(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `pimingestd` client command in a container of the image beside the daemon, as `docker compose exec`
        runs one: the same config and secrets, no URL or token given."""
        mounts = {"/etc/pimingestd/config.toml": (self.cfg, "ro"), "/run/secrets": (self.secrets, "ro")}
        argv = container(self.image, mounts, ["pimingestd", *args])
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def healthcheck(self) -> int:
        """The image's HEALTHCHECK command, run in the image as the engine runs it; its exit code."""
        test = self.image.config["Healthcheck"]["Test"]
        assert test[0] == "CMD", test
        argv = container(self.image, {"/etc/pimingestd/config.toml": (self.cfg, "ro")}, test[1:])  # its port
        return subprocess.run(argv, capture_output=True, timeout=60).returncode


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


async def test_a_closed_cluster_leaves_no_container_running(image: Image, tmp_path: Path) -> None:
    """The daemon's and the receiver's containers end with the cluster: their PID 1s run as the image's user,
    which unshare's --kill-child does not reach (see ImageCluster.close)."""
    c = ImageCluster(tmp_path / "c", image=image)
    try:
        await c.start_receiver()
        await c.start_daemon()
        assert c.daemon is not None and c.receiver is not None
        inits = [init_of(c.daemon), init_of(c.receiver)]
        assert all(init.uids().real == image.uid for init in inits)
    finally:
        c.close()
    _, alive = psutil.wait_procs(inits, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_the_image_declares_its_user_volume_healthcheck_and_command(image: Image) -> None:
    """The image runs as an unprivileged user, declares its state folder a volume owned by that user, checks
    /healthz, stops with SIGTERM, runs `pimingestd run` on the mounted config in exec form (no shell in between),
    and points CREDENTIALS_DIRECTORY at /run/secrets."""
    cfg = image.config
    assert image.uid != 0 and image.gid != 0, cfg["User"]
    assert VOLUME in cfg["Volumes"]
    state = image.rootfs / VOLUME.lstrip("/")
    assert state.stat().st_uid == image.uid
    assert state.stat().st_gid == 0 and state.stat().st_mode & 0o070 == 0o070  # see the arbitrary-uid test
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["Cmd"] == ["pimingestd", "run", "--config", "/etc/pimingestd/config.toml"]
    assert not cfg.get("Entrypoint")
    health = cfg["Healthcheck"]
    assert health["Test"][0] == "CMD" and "/healthz" in " ".join(health["Test"])
    assert "CREDENTIALS_DIRECTORY=/run/secrets" in cfg["Env"]
    # Nothing the daemon never runs: no pip or setuptools in its venv, no pip cache, no tests.
    (site,) = (image.rootfs / "opt/pimingestd/lib").glob("python3*/site-packages")
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "pimingestd" in installed and not {"pip", "setuptools", "wheel"} & installed, sorted(installed)
    assert not list((image.rootfs / "root").glob(".cache/pip")) and not (site / "tests").exists()


async def test_the_image_delivers_a_file_and_drains_on_sigterm_as_pid_1(
    image: Image, make_cluster: MakeCluster
) -> None:
    """The daemon and the receiver, both from the image, deliver a file end to end, signed with the secret
    from /run/secrets; the daemon is PID 1 of its container as the image's user, its state database lands in
    the volume, the HEALTHCHECK passes while it is ready and fails once it is gone; SIGTERM to PID 1 drains
    (the chunks in flight get their ACKs, exit 0), and the next start completes the file, each record once."""
    c = make_cluster(ImageCluster, image=image, chunking={"records": 20}, delivery={"ack_timeout": 10.0})
    assert isinstance(c, ImageCluster)
    records = [product(i) for i in range(400)]
    write_json(c.data / "p.json", records)
    await c.start_receiver()
    await c.faults([{"action": "delay_ack", "seconds": 0.05, "times": 10000}])
    await c.start_daemon()
    assert c.daemon is not None
    init = init_of(c.daemon)
    assert init.uids().real == image.uid and init.gids().real == image.gid
    nspid = next(ln for ln in Path(f"/proc/{init.pid}/status").read_text().splitlines() if ln.startswith("NSpid:"))
    assert nspid.split()[-1] == "1", nspid  # PID 1 in its container: SIGTERM reaches it only through a handler
    assert c.healthcheck() == 0
    code, _ = await c.call("GET", c.durl + "/api/ingestions", headers={})
    assert code == 401  # the API token came from /run/secrets/api-token

    ing = await c.ingest(Path(f"{VOLUME}/data/p.json"))
    while (await c.status(ing))["chunks_acked"] < 3:
        await asyncio.sleep(0.02)
    init.send_signal(signal.SIGTERM)
    assert await c.exit_code(30) == 0
    log = events(c.log)
    assert any(e.get("event") == "shutting down" and e.get("signal") == "SIGTERM" for e in log), log[-5:]
    drained = [e for e in log if e.get("event") == "drain finished"]
    assert drained and drained[-1]["clean"] is True, drained
    assert c.healthcheck() != 0  # nothing answers: the engine would mark it unhealthy
    assert c.state_db.is_file() and c.state_db.stat().st_uid == image.uid  # in the volume, the user's

    await c.start_daemon()
    assert (await c.settle(ing))["status"] == "completed"
    assert await c.applied(ing) == records
    await c.verify(ing, records)
    status = c.client("status", ing, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "completed"


async def test_the_image_runs_as_an_arbitrary_uid_in_the_root_group(image: Image, make_cluster: MakeCluster) -> None:
    """OpenShift's restricted policy runs an image as a uid of its own choosing with gid 0, and `docker run --user
    1000700000:0` does the same: the volume (a copy of the image's folder) is writable by that group, so the
    daemon opens its state there and delivers a file, instead of stopping with exit 74."""
    c = make_cluster(ImageCluster, image=image, user=(1000700000, 0))
    assert isinstance(c, ImageCluster)
    records = [product(i) for i in range(50)]
    write_json(c.data / "p.json", records)
    await c.start_receiver()
    await c.start_daemon()
    assert c.daemon is not None
    assert init_of(c.daemon).uids().real == 1000700000
    ing = await c.ingest(Path(f"{VOLUME}/data/p.json"))
    assert (await c.settle(ing))["status"] == "completed"
    assert await c.applied(ing) == records
    assert c.state_db.stat().st_uid == 1000700000
