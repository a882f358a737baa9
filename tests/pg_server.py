"""A real PostgreSQL server for the tests: ``initdb`` into a temporary folder from the installed binaries
(Debian's ``postgresql`` package; ``.ci/run`` installs it), started on a free loopback port.

``initdb`` and ``postgres`` refuse to run as root, so as root the server runs as the unprivileged ``nobody``
user, which owns the data folder. ``fresh_database`` makes an empty, migrated database per test by copying
a template (much faster than migrating each one).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def bindir() -> Path:
    """Where the server binaries are (``pg_config --bindir``, else the newest Debian cluster version)."""
    try:
        found = Path(
            subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        )
        if (found / "initdb").exists():
            return found
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (as .ci/run does)")
    return versions[-1].parent


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One throwaway cluster; ``url(db)`` names a database on it."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="mcp-letta-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        self._names = itertools.count()
        self.fsync = False  # tests: a test cluster need not survive a power cut; benchmarks set True
        self.max_connections = 500

    def _options(self) -> str:
        durability = "" if self.fsync else "-F -c synchronous_commit=off "
        return (
            f"{durability}-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self.max_connections} -c shared_buffers=64MB"
        )

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> PgServer:
        """initdb and start the server."""
        if self.as_user:
            shutil.chown(self.dir, "nobody")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")  # fmt: skip
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", self._options(),
                  "-w", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server ("fast" waits for clients to go; "immediate" does not)."""
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, cwd=self.dir, check=False)  # fmt: skip

    def restart(self) -> None:
        """Stop and start again on the same port (clients' connections break)."""
        self.stop("fast")
        self.start_again()

    def start_again(self) -> None:
        """Start the stopped server on the same port."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", self._options(),
                  "-w", "start")  # fmt: skip

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser, outside a transaction."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)

    def prepare_template(self) -> None:
        """A migrated empty database to copy for each test."""
        import psycopg

        from mcp_letta.store.postgres.db import migrate

        self.sql("CREATE DATABASE mcp_letta_template")
        with psycopg.connect(self.url("mcp_letta_template"), autocommit=True) as conn:
            migrate(conn, "the template database")

    def fresh_database(self) -> str:
        """The URL of a new database copied from the template."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE mcp_letta_template")
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by ``fresh_database`` (closing whatever still uses it)."""
        self.sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


class PgBouncer:
    """A real PgBouncer (Debian's ``pgbouncer`` package; ``.ci/run`` installs it) in front of ``server`` on a
    free loopback port, lending server sessions per ``mode`` ("session" or "transaction"). As root it runs as
    ``nobody``, as the server does. ``with PgBouncer(server, "transaction") as bouncer:``."""

    BINARY = "/usr/sbin/pgbouncer"

    def __init__(self, server: PgServer, mode: str) -> None:
        self.server = server
        self.mode = mode
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mcp-letta-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PgBouncer:
        settings = {
            "listen_addr": "127.0.0.1", "listen_port": self.port, "unix_socket_dir": "", "pool_mode": self.mode,
            "auth_type": "trust", "auth_file": self.dir / "users.txt", "logfile": self.dir / "log",
            "max_client_conn": 200, "default_pool_size": 60, "ignore_startup_parameters": "extra_float_digits",
        }  # fmt: skip
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n* = host=127.0.0.1 port={self.server.port}\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        if self.server.as_user:
            for path in (self.dir, *self.dir.iterdir()):
                shutil.chown(path, "nobody")
        self.process = subprocess.Popen([*self.server.as_user, self.BINARY, str(self.dir / "pgbouncer.ini")])
        deadline = time.monotonic() + 30
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    log = self.dir / "log"
                    raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else ''}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` through the pooler."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
