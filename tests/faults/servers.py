"""Private Redis and PostgreSQL for the fault tests: own data dirs, free loopback ports, PIDs.

Both run with passwords (so the oracle can look for them in every log) and are stopped by
the PID this module started, never by name. PostgreSQL runs as the `postgres` user (initdb
refuses root); its folder is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import redis

from tests.integration.conftest import wait_for

#: Longest wait for a server to come up or go down (seconds).
BOOT_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PrivateRedis:
    """`redis-server` with AOF (everysec), noeviction and a password, on a free port."""

    #: False for a server the harness did not start: faults that restart it are skipped.
    restartable = True

    def __init__(self, folder: Path, password: str, *, appendonly: bool = True) -> None:
        self.folder = folder
        self.password = password
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5
        )

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--requirepass", self.password,
            "--pidfile", str(self.folder / "redis.pid"),
            "--daemonize", "no",
        ]  # fmt: skip
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115  (the child keeps it)
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        wait_for(self.ping, BOOT_TIMEOUT, f"redis on port {self.port}")

    def ping(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def shutdown(self) -> None:
        """Graceful: SHUTDOWN (the AOF is flushed), then wait for the process to exit."""
        assert self.process is not None
        client = self.client()
        try:
            client.shutdown()
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        self.process.wait(BOOT_TIMEOUT)

    def crash(self) -> None:
        """kill -9: whatever the AOF had not flushed is lost."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(BOOT_TIMEOUT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb as `postgres`), password auth over TCP."""

    restartable = True

    def __init__(self, folder: Path, password: str) -> None:
        self.folder = folder
        self.password = password
        self.port = free_port()
        self.data = folder / "pg"
        self.bin = _pg_bin()
        folder.mkdir(parents=True, exist_ok=True)
        owner = pwd.getpwnam("postgres")
        # The postgres user must reach its data dir and write its socket and log here.
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        folder.chmod(0o700)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            cwd=self.folder,
            capture_output=True,
            timeout=BOOT_TIMEOUT,
            check=False,
        )
        if check and done.returncode:
            tail = (done.stderr or done.stdout).decode("utf-8", "replace")[-500:]
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {tail}")
        return done

    def init(self) -> None:
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        owner = pwd.getpwnam("postgres")
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", "postgres",
            "--pwfile", str(pwfile),
            "--auth-local", "trust",
            "--auth-host", "scram-sha-256",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D", str(self.data),
            "-o", options,
            "-l", str(self.folder / "pg.log"),
            "-w", "-t", str(int(BOOT_TIMEOUT)),
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m fast|immediate (immediate: crash recovery at the next start)."""
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def destroy(self) -> None:
        """Stop immediately; if pg_ctl could not, kill the postmaster by its PID."""
        pid = self.pid()
        self.stop("immediate")
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _pg_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian layout)."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server installed under /usr/lib/postgresql")
    return versions[-1] / "bin"


class ExternalRedis(PrivateRedis):
    """CARILLON_TEST_FAULTS_EXTERNAL=1: a Redis someone else runs; it cannot be restarted."""

    restartable = False

    def __init__(self, url: str) -> None:
        self._url = url
        self.folder = Path("/nonexistent/carillon-redis")
        self.password = (
            redis.Redis.from_url(url).connection_pool.connection_kwargs.get("password") or ""
        )
        self.process = None

    @property
    def url(self) -> str:
        return self._url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self._url, socket_timeout=5)

    def start(self) -> None:
        raise RuntimeError("an external Redis is not started by the harness")

    def shutdown(self) -> None:
        raise RuntimeError("an external Redis is not restarted by the harness")

    crash = shutdown

    def stop(self) -> None:
        """Not ours to stop."""


class ExternalPostgres(PrivatePostgres):
    """CARILLON_TEST_FAULTS_EXTERNAL=1: a PostgreSQL someone else runs (not restarted)."""

    restartable = False

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)
        self.password = self.admin.password or ""
        self.folder = Path("/nonexistent/carillon-pg")

    def url(self, database: str = "postgres") -> str:
        return self.admin.set(database=database).render_as_string(hide_password=False)

    def init(self) -> None:
        """Nothing to create."""

    def start(self) -> None:
        raise RuntimeError("an external PostgreSQL is not started by the harness")

    def stop(self, mode: str = "fast") -> None:
        raise RuntimeError("an external PostgreSQL is not stopped by the harness")

    def destroy(self) -> None:
        """Not ours."""
