"""A team's setup on 127.0.0.1 for tests/test_auth_server.py: a private PostgreSQL with a generated password,
MLflow's basic-auth server started by scripts/team_server.sh, and a sampler of what worker processes cost.

Every secret is generated per run (`secrets.token_urlsafe`) and reaches the processes through the environment
only (PGPASSWORD, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_TRACKING_PASSWORD), as docs/scaling.md says to.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT

# where initdb and postgres may be besides PATH: Debian's package keeps them in /usr/lib/postgresql/<version>/bin
PG_BINS = [Path("/usr/local/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def password() -> str:
    return "pw-" + secrets.token_urlsafe(18)  # >= 12 characters: MLflow's minimum


def postgres_missing() -> str | None:
    """Why a private PostgreSQL cannot be started here, or None."""
    for tool in ("initdb", "postgres"):
        if _tool(tool) is None:
            return f"no PostgreSQL `{tool}` on PATH or in {', '.join(map(str, PG_BINS))}"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root (initdb refuses) and there is no `postgres` user to run it as"
    return None


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((str(d / name) for d in PG_BINS if (d / name).exists()), None)


@dataclass
class LocalPostgres:
    """A throwaway PostgreSQL on 127.0.0.1:`port`: superuser `user` with password `password` (scram-sha-256 on
    TCP), data in a private temporary directory; `url(db)` names no password (libpq reads PGPASSWORD)."""

    user: str = "tc"
    password: str = field(default_factory=password)
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tc-pg-")))
    proc: subprocess.Popen | None = None

    def _as_owner(self) -> list[str]:
        # initdb and postgres refuse to run as root: run them as `postgres`, which then owns the data
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> LocalPostgres:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        data = str(self.root / "data")
        initdb = [_tool("initdb"), "-D", data, "-U", self.user, f"--pwfile={pwfile}", "-A", "scram-sha-256"]
        subprocess.run([*self._as_owner(), *initdb, "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        pwfile.unlink()
        postgres = [_tool("postgres"), "-D", data, "-p", str(self.port), "-k", str(self.root)]
        self.proc = subprocess.Popen(
            [*self._as_owner(), *postgres, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import psycopg2

        deadline = time.time() + 60
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", password=self.password
                )
                break
            except psycopg2.OperationalError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("mlflow", "optuna"):
                cur.execute(f"CREATE DATABASE {db}")
        conn.close()
        return self

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # postgres' "fast" shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class TeamServer:
    """`scripts/team_server.sh` on 127.0.0.1: basic auth with a generated admin password and secret key,
    artifacts proxied into `artifacts`. `env` is what the server got (its database password included)."""

    backend: str
    artifacts: Path
    config_dir: Path
    db_env: dict[str, str]
    admin_password: str = field(default_factory=password)
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> TeamServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "PG"))}
        env |= self.db_env | {
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
            "PYTHON": sys.executable,
        }
        self.log = self.config_dir.parent / "server.log"
        args = ["--backend", self.backend, "--artifacts", str(self.artifacts), "--port", str(self.port)]
        args += ["--workers", "1", "--config-dir", str(self.config_dir)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "team_server.sh"), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(f"{self.url}/health", timeout=2).read() == b"OK":
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


# ---- what processes cost ------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB from /proc (PSS shares each shared page among its users); (0, 0) if gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:] if line.split()[1:2]}
    return values.get("Rss", 0), values.get("Pss", 0)


@dataclass
class Peak:
    processes: int = 0
    rss_kib: int = 0
    pss_kib: int = 0
    rss_kib_by_process: dict[str, int] = field(default_factory=dict)  # "<pid> <command>": its peak RSS


def _command(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace").rsplit("/", 1)[-1] for a in args[:4])


class Sampler:
    """Samples, every `every` s, each root pid's process tree: the peak number of processes and the peak summed
    RSS and PSS (each a peak over time of the sum over the tree)."""

    def __init__(self, roots: dict[str, int], every: float = 0.5):
        self.roots, self.every = roots, every
        self.peaks = {name: Peak() for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, root in self.roots.items():
                pids = tree(root)
                mem = [memory_kib(p) for p in pids]
                peak = self.peaks[name]
                alive = [m for m in mem if m[0]]
                peak.processes = max(peak.processes, len(alive))
                peak.rss_kib = max(peak.rss_kib, sum(m[0] for m in mem))
                peak.pss_kib = max(peak.pss_kib, sum(m[1] for m in mem))
                for p, (rss, _) in zip(pids, mem, strict=True):
                    if rss:
                        key = f"{p} {_command(p)}"
                        peak.rss_kib_by_process[key] = max(peak.rss_kib_by_process.get(key, 0), rss)
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
