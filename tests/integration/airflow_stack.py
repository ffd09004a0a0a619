"""A production-shaped Airflow for one test session: PostgreSQL metadata DB, CeleryExecutor on Redis, and the
real components (api-server, scheduler, dag-processor, Celery worker) as separate processes.

Everything it creates is its own and removed by :meth:`AirflowStack.stop`: a fresh database
``tunegate_it_<random>`` (dropped), a Celery queue ``tunegate_it_<random>`` on a dedicated Redis database
(its keys deleted), a temporary AIRFLOW_HOME, and every process, each started in its own process group so
that SIGTERM and then SIGKILL reach the children it forked (Celery pool, task supervisors, API workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PG_HOST, PG_USER = "127.0.0.1", "postgres"
PG_PORT = int(os.environ.get("TUNEGATE_IT_PG_PORT", "5432"))
REDIS_HOST = "127.0.0.1"
REDIS_PORT = int(os.environ.get("TUNEGATE_IT_REDIS_PORT", "6379"))
#: Redis database used for the Celery broker (override with TUNEGATE_IT_REDIS_DB); the queue name is random
#: per run, so concurrent runs on the same database do not take each other's tasks.
REDIS_DB = int(os.environ.get("TUNEGATE_IT_REDIS_DB", "11"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "celery-worker")
TERM_GRACE_S = 20.0


def services_problem() -> str | None:
    """``None`` when PostgreSQL and Redis answer on loopback and the drivers are installed, else a one-line reason."""
    import importlib.util

    # Airflow 3 on PostgreSQL needs both drivers: psycopg2 (sync) and asyncpg (the API server's async sessions).
    missing = [m for m in ("psycopg2", "asyncpg", "redis", "celery") if importlib.util.find_spec(m) is None]
    if missing:
        return f"Python packages missing for the Postgres/Celery stack: {', '.join(missing)}"
    import psycopg2

    try:
        psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3).close()
    except psycopg2.Error as exc:
        return f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({str(exc).strip().splitlines()[0]})"
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=3) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(16).startswith(b"+PONG"):
                return f"Redis at {REDIS_HOST}:{REDIS_PORT} did not answer PING"
    except OSError as exc:
        return f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AirflowStack:
    root: Path
    dags_folder: Path
    #: Environment for every component on top of the generated configuration (connections, tunegate vars).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: Components whose process group was still there after SIGKILL (set by :meth:`stop`; should stay empty).
    leftover: list[str] = field(default_factory=list)
    #: Celery worker processes (``celery-worker``, ``celery-worker-2``, ...) and the task slots of each.
    celery_workers: int = 1
    worker_concurrency: int = 2
    _db_created: bool = False

    @property
    def db_name(self) -> str:
        return f"tunegate_it_{self.token}"

    @property
    def queue(self) -> str:
        return f"tunegate_it_{self.token}"

    @property
    def home(self) -> Path:
        return self.root / "airflow_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        # Nothing of the caller's Airflow or tunegate configuration leaks in (the unit tests set some).
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW", "TUNEGATE_", "_AIRFLOW")) and k not in ("CELERY_BROKER_URL",)}
        db = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.db_name}"
        secret = secrets.token_urlsafe(32)
        env = {
            **base,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": secret,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.db_name}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            # Parse each DAG file once; the test never edits them while the stack runs.
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.extra_env)
        return env

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._env = self.env()
        t = time.monotonic()
        self._create_db()
        self._run(["airflow", "db", "migrate"], "db-migrate", timeout=300)
        self.timings["migrate_s"] = time.monotonic() - t
        t = time.monotonic()
        commands = {
            "api-server": ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
            "dag-processor": ["airflow", "dag-processor"],
        }
        for n in range(1, self.celery_workers + 1):
            suffix = "" if n == 1 else f"-{n}"
            commands[f"celery-worker{suffix}"] = [
                "airflow", "celery", "worker", "--concurrency", str(self.worker_concurrency), "--queues", self.queue,
                "--skip-serve-logs", "--without-gossip", "--without-mingle",
                "--celery-hostname", f"{self.queue}{suffix}@%h"]
        for name, cmd in commands.items():
            self._spawn(name, cmd)
        self.wait_for(self._health_ok, 180, "the api-server to answer /api/v2/monitor/health")
        self.timings["components_up_s"] = time.monotonic() - t

    def stop(self) -> None:
        """Stop every process group (SIGTERM, then SIGKILL), drop the database, remove the broker keys."""
        alive = {name: p for name, p in self.procs.items() if _group_alive(p.pid)}
        for p in alive.values():
            _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        while time.monotonic() < deadline and any(_group_alive(p.pid) for p in alive.values()):
            for p in alive.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=0.1)
            time.sleep(0.2)
        for p in alive.values():
            if _group_alive(p.pid):
                _signal_group(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        self.leftover = [name for name, p in self.procs.items() if _group_alive(p.pid)]
        if self._db_created:
            self._drop_db()
        self._clean_redis()

    def _create_db(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:  # not `with conn`: that opens a transaction, which CREATE DATABASE refuses
                cur.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            conn.close()
        self._db_created = True

    def _drop_db(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            conn.close()
        self._db_created = False

    def _clean_redis(self) -> None:
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"*{self.queue}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def _run(self, cmd: list[str], name: str, timeout: float) -> None:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self._env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                    start_new_session=True)
            self.procs[name] = proc
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s\n{self.tail(name)}") from None
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {rc}\n{self.tail(name)}")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        try:
            self.procs[name] = subprocess.Popen(cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.root, start_new_session=True)
        finally:
            log.close()  # the child holds its own descriptor

    # -- observing ----------------------------------------------------------------------------------

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return f"[{name}: no log]"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return f"--- {name} (last {len(text)} lines of {path}) ---\n" + "\n".join(text)

    def components(self) -> list[str]:
        return [*COMPONENTS, *(f"celery-worker-{n}" for n in range(2, self.celery_workers + 1))]

    def diagnostics(self) -> str:
        return "\n".join(self.tail(name) for name in self.components())

    def check_alive(self) -> None:
        for name in self.components():
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {p.returncode}\n{self.tail(name, 80)}")

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str, interval: float = 2.0) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the components' logs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")
            time.sleep(interval)

    def _health_ok(self) -> bool:
        try:
            status, _ = self.api("GET", "/api/v2/monitor/health")
        except OSError:
            return False
        return status == 200

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the REST API (the simple auth manager's all-admins mode authenticates every request)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" for killpg; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        pid, _ = os.waitpid(pgid, os.WNOHANG)
        if pid == pgid:
            return _group_alive(pgid)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
