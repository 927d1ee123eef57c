"""Flower deployment transport: a SuperLink hub and one SuperNode per site, TLS and node auth.

How Flower 1.42 is driven here (all bound to 127.0.0.1 unless told otherwise):

* ``flower-superlink --host H --port P --ssl-ca-certfile ca.pem --ssl-certfile server.pem
  --ssl-keyfile server.key --enable-supernode-auth --disable-runtime-dependency-installation``:
  one TLS HTTP port serves the Fleet API (SuperNodes), the Control API (``flwr`` CLI) and the
  Runtime API (ServerApp). It starts a ``flower-superexec`` child that runs each ServerApp in a
  ``flwr-serverapp`` process.
* SuperNode authentication: the SuperLink only accepts SuperNodes whose public key was registered
  through the Control API, ``flwr supernode register node.pub <connection>``; the SuperNode signs
  its requests with ``flower-supernode --auth-supernode-private-key node`` (EC P-384, OpenSSH).
* ``flower-supernode --superlink H:P --root-certificates ca.pem --auth-supernode-private-key KEY
  --node-config "site-dir='DIR' site-id='ID'" --isolation process --host 127.0.0.1 --port Q``
  (Q: its local Runtime API, one per SuperNode on a shared machine), and beside it the site
  worker ``python -m hemafed.federation.flower.site_worker --runtime-api 127.0.0.1:Q
  --site-dir DIR`` (:mod:`hemafed.federation.flower.site_worker`): the SuperNode's only
  executor, which runs hemafed's own ClientApp in one long-running process and refuses every
  Flower app whose hash the site did not pin.
* The ``flwr`` CLI finds the SuperLink through a connection in ``$FLWR_HOME/config.toml``; we
  write a private one (``[superlink.hemafed]``) in the deployment's work directory.
* Runs: ``flwr run <hemafed/federation/flower/app> hemafed --run-config "job-dir='...'"``; the
  ServerApp reads ``job-dir/request.json`` and writes ``job-dir/result.json`` (see
  :mod:`hemafed.federation.flower.apps`). The site handler is a site setting
  (``add_site(handler_factory=...)``, ``site serve --handler-factory``), never in the run.

Every process is started in its own session; :meth:`Deployment.stop` (run by the context manager
whatever happens) ends it and every descendant it spawned, by PID.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hemafed import atomic
from hemafed.errors import InvalidInput, ProtocolError
from hemafed.federation.flower.apps import (
    DEFAULT_HOLD_SECONDS,
    ERROR_FILE,
    PROGRESS_FILE,
    REQUEST_FILE,
    RESULT_FILE,
)
from hemafed.federation.flower.certificates import (
    NodeAuthKeys,
    ServerCertificates,
    make_node_auth_keys,
    make_test_ca_and_server_cert,
)
from hemafed.federation.transport import decode_result, load_object

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent / "app"
CONNECTION = "hemafed"
DEFAULT_HUB_MAIN = "hemafed.federation.flower.probe:probe_hub"
DEFAULT_HANDLER_FACTORY = "hemafed.study.site_runtime:site_handler"
PROBE_HANDLER_FACTORY = "hemafed.federation.flower.probe:probe_handler"


def flower_env(flwr_home: Path | None = None,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: no runtime installs, no telemetry, no update check."""
    env = {**os.environ, **(extra or {})}
    if extra and "PYTHONPATH" in extra and os.environ.get("PYTHONPATH"):
        # keep the caller's import path (e.g. a source checkout) after the extra entries
        env["PYTHONPATH"] = os.pathsep.join([extra["PYTHONPATH"], os.environ["PYTHONPATH"]])
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    # Flower finds its helpers (flower-superexec, flwr-serverapp, ...) on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def flower_command(name: str) -> str:
    """Path of a Flower console script installed beside this Python."""
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        raise InvalidInput(f"{name} not found beside {sys.executable}; install flwr in this "
                           "environment")
    return str(candidate)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float,
                  process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ProtocolError(f"process {process.args!r} exited with code {process.returncode} "
                                f"before listening on {host}:{port}; see its log")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ProtocolError(f"nothing listens on {host}:{port} after {timeout:g} s")


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc; children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2][-1].decode(errors="replace")
    except OSError:
        return "?"


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> list[int]:
    """Terminate processes and all their descendants by PID (SIGTERM, then SIGKILL after
    ``grace`` seconds); return every PID that was signalled."""
    pids: list[int] = []
    for proc in processes:
        pids += descendants(proc.pid)
        if proc.poll() is None:
            pids.append(proc.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        for proc in processes:
            proc.poll()  # reap our own children so they stop being zombies
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            # routine at shutdown (Flower's app processes often outlive SIGTERM), not a fault
            log.info("process %d (%s) still running %g s after SIGTERM; killing it", pid,
                        _command_name(pid), grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    return pids


@dataclass
class Deployment:
    """A SuperLink and its SuperNodes on this machine; use as a context manager.

    >>> with Deployment.start(workdir) as dep:                               # doctest: +SKIP
    ...     dep.add_site("/data/site-a")
    ...     result = dep.run("pkg.hub:main", "pkg.site:handler_factory", {"rounds": 3})
    """

    workdir: Path
    certs: ServerCertificates
    host: str
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    signalled: list[int] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    database: Path | None = None
    superlink: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink (Fleet, Control and Runtime API)."""
        return f"{self.host}:{self.port}"

    @property
    def flwr_home(self) -> Path:
        """Private ``FLWR_HOME`` holding the ``flwr`` CLI's connection to this SuperLink."""
        return self.workdir / "flwr-home"

    # -- starting ------------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: str | os.PathLike[str], *, certs: ServerCertificates | None = None,
              host: str = "127.0.0.1", port: int | None = None,
              startup_timeout: float = 30.0,
              extra_env: Mapping[str, str] | None = None,
              persistent: bool = False) -> Deployment:
        """Start a SuperLink with TLS and SuperNode authentication (test certificates if none).

        ``extra_env`` is added to the environment of every process started (e.g. ``PYTHONPATH``
        so that hub and site code outside installed packages can be imported). ``persistent``
        keeps the SuperLink's state (registered SuperNodes, runs) in ``workdir/superlink.db``,
        so that :meth:`restart_superlink` loses no registration.
        """
        work = Path(workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        certs = certs or make_test_ca_and_server_cert(work / "certs", hosts=(host, "localhost"))
        dep = cls(work, certs, host, port or free_port(host), dict(extra_env or {}))
        dep.database = work / "superlink.db" if persistent else None
        try:
            write_connection(dep.flwr_home, dep.address, certs.ca_cert)
            dep._start_superlink(startup_timeout)
        except BaseException:
            dep.stop()
            raise
        return dep

    def _start_superlink(self, startup_timeout: float) -> subprocess.Popen[bytes]:
        command = [
            flower_command("flower-superlink"), "--host", self.host, "--port", str(self.port),
            "--ssl-ca-certfile", str(self.certs.ca_cert),
            "--ssl-certfile", str(self.certs.server_cert),
            "--ssl-keyfile", str(self.certs.server_key), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation"]
        if self.database is not None:
            command += ["--database", str(self.database)]
        proc = self._spawn("superlink", command)
        self.superlink = proc
        wait_for_port(self.host, self.port, startup_timeout, proc)
        return proc

    def restart_superlink(self, startup_timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """Stop the SuperLink (and its SuperExec) by PID and start it again on the same port."""
        if self.superlink is not None:
            self.signalled += stop_processes([self.superlink])
            self.processes.remove(self.superlink)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:  # the port is free once the old process is gone
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((self.host, self.port))
                break
            except OSError:
                time.sleep(0.2)
        return self._start_superlink(startup_timeout)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log_file)
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=flower_env(self.flwr_home, self.extra_env),
                                start_new_session=True)
        self.processes.append(proc)
        log.info("started %s (pid %d), log %s", name, proc.pid, log_path)
        return proc

    def register(self, *public_keys: str | os.PathLike[str]) -> list[int]:
        """Register SuperNode public keys at this SuperLink; return their node ids."""
        return register_keys(self.flwr_home, public_keys)

    def add_sites(self, site_dirs: list[str | os.PathLike[str]], *,
                  max_wait_time: float | None = None,
                  handler_factory: str = DEFAULT_HANDLER_FACTORY, isolation: str = "process"
                  ) -> list[subprocess.Popen[bytes]]:
        """Make a key pair per site dir, register them all, start one SuperNode (and its site
        worker) each; the site id comes from ``site.yaml`` (else the directory name)."""
        from hemafed.federation.flower.site_worker import site_identity

        keyed = []
        for site_dir in site_dirs:
            site_path = Path(site_dir).resolve()
            sid = site_identity(site_path)
            keyed.append((site_path, sid, make_node_auth_keys(self.workdir / "node-keys", sid)))
        self.register(*(keys.public_key for _, _, keys in keyed))
        return [self.add_site(path, site_id=sid, keys=keys, register=False,
                              max_wait_time=max_wait_time, handler_factory=handler_factory,
                              isolation=isolation)
                for path, sid, keys in keyed]

    def add_site(self, site_dir: str | os.PathLike[str], *, site_id: str | None = None,
                 keys: NodeAuthKeys | None = None, register: bool = True,
                 max_wait_time: float | None = None,
                 handler_factory: str = DEFAULT_HANDLER_FACTORY,
                 trusted_app_sha256: Sequence[str] = (),
                 isolation: str = "process") -> subprocess.Popen[bytes]:
        """Start a SuperNode for ``site_dir`` and its site worker; return the SuperNode.

        New key pair if none; registered unless told not. ``site_id`` defaults to ``site.yaml``
        (else the directory name). ``handler_factory`` is the site's handler (a site setting);
        ``trusted_app_sha256`` adds FAB hashes the site runs besides the installed hemafed app.
        ``max_wait_time`` bounds how long the SuperNode keeps trying to connect.
        ``isolation="subprocess"`` starts Flower's default SuperNode instead (no site worker: a
        ``flwr-clientapp`` per message runs the submitted app unchecked); benchmarks only.
        """
        if isolation not in ("process", "subprocess"):
            raise InvalidInput(f"isolation must be 'process' or 'subprocess', got {isolation!r}")
        from hemafed.federation.flower.site_worker import ensure_runtime_secret, site_identity

        site_path = Path(site_dir).resolve()
        sid = site_identity(site_path, site_id)
        secret = ensure_runtime_secret(site_path) if isolation == "process" else None
        if "'" in str(site_path):
            raise InvalidInput(f"site directory {site_path} contains a single quote; Flower's "
                               "--node-config cannot carry it")
        keys = keys or make_node_auth_keys(self.workdir / "node-keys", sid)
        if register:
            self.register(keys.public_key)
        runtime_port = free_port(self.host)
        node = self._spawn(f"supernode-{sid}", supernode_command(
            self.address, self.certs.ca_cert, keys.private_key, site_path, sid,
            runtime_port=runtime_port, max_wait_time=max_wait_time, isolation=isolation,
            auth_secret_file=secret))
        if isolation == "subprocess":
            return node
        self._spawn(f"worker-{sid}", worker_command(
            f"127.0.0.1:{runtime_port}", site_path, sid, handler_factory=handler_factory,
            trusted_app_sha256=trusted_app_sha256, supernode_pid=node.pid,
            auth_secret_file=secret))
        return node

    # -- running -------------------------------------------------------------------------

    def run(self, hub_main: str = DEFAULT_HUB_MAIN,
            config: Mapping[str, Any] | None = None, *, expected_sites: int | None = None,
            timeout: float = 30.0, connect_timeout: float = 30.0,
            run_timeout: float = 300.0, hold: float | None = None) -> dict[str, Any]:
        """Submit one run and wait for it; return ``{"result", "exchange_seconds", "sites"}``
        (``hold``: see :func:`submit_run`)."""
        job_dir = self.workdir / "jobs" / uuid.uuid4().hex[:12]
        return submit_run(self.flwr_home, job_dir, hub_main, config or {},
                          expected_sites=expected_sites, timeout=timeout,
                          connect_timeout=connect_timeout, run_timeout=run_timeout,
                          watch=[self.superlink] if self.superlink is not None else [],
                          hold=hold)

    # -- stopping ------------------------------------------------------------------------

    def stop(self) -> list[int]:
        """Stop every process started here and its descendants, by PID; return those PIDs."""
        self.signalled += stop_processes(self.processes)
        for log_file in self._logs:
            log_file.close()
        self._logs.clear()
        return list(self.signalled)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def supernode_command(superlink: str, ca_cert: Path, private_key: Path, site_dir: Path,
                      site_id: str, *, runtime_port: int, host: str = "127.0.0.1",
                      max_wait_time: float | None = None,
                      isolation: str = "process", auth_secret_file: Path | None = None
                      ) -> list[str]:
    """The ``flower-supernode`` command line for one site (``auth_secret_file``: only the
    holder of that secret, the site worker, may take tasks from its Runtime API)."""
    command = [flower_command("flower-supernode"), "--superlink", superlink,
               "--root-certificates", str(ca_cert), "--auth-supernode-private-key",
               str(private_key), "--node-config", f"site-dir='{site_dir}' site-id='{site_id}'",
               "--isolation", isolation, "--host", host, "--port", str(runtime_port)]
    if max_wait_time is not None:
        command += ["--max-wait-time", str(max_wait_time)]
    if auth_secret_file is not None:
        command += ["--superexec-auth-secret-file", str(auth_secret_file)]
    return command


def worker_command(runtime_api: str, site_dir: Path, site_id: str, *,
                   handler_factory: str = DEFAULT_HANDLER_FACTORY,
                   trusted_app_sha256: Sequence[str] = (),
                   supernode_pid: int | None = None,
                   auth_secret_file: Path | None = None,
                   hold_cap: float | None = None) -> list[str]:
    """The site worker's command line (see :mod:`hemafed.federation.flower.site_worker`;
    ``hold_cap``: its ``--hold-cap``, default 2 s)."""
    command = [sys.executable, "-m", "hemafed.federation.flower.site_worker", "--runtime-api",
               runtime_api, "--site-dir", str(site_dir), "--site-id", site_id,
               "--handler-factory", handler_factory]
    for digest in trusted_app_sha256:
        command += ["--app-sha256", digest]
    if supernode_pid is not None:
        command += ["--supernode-pid", str(supernode_pid)]
    if auth_secret_file is not None:
        command += ["--superexec-auth-secret-file", str(auth_secret_file)]
    if hold_cap is not None:
        command += ["--hold-cap", str(hold_cap)]
    return command


def write_connection(flwr_home: Path, address: str, ca_cert: Path) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one default connection named ``hemafed``."""
    text = (f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{address}"\nroot-certificates = "{ca_cert}"\n')
    path = flwr_home / "config.toml"
    atomic.write_text(path, text)
    return path


_SEP = "\x1f"  # separates the words of one command in a single argv entry
_FLWR_MANY = f"""
import json, sys
from flwr.cli.app import app
for i, argv in enumerate(sys.argv[1:]):
    print("@@hemafed-%d@@" % i, flush=True)
    try:
        app(argv.split({_SEP!r}), standalone_mode=False)
    except BaseException as err:
        print(json.dumps({{"success": False, "error": str(err)}}))
    sys.stdout.flush()
"""


def _parse_json(text: str) -> dict[str, Any]:
    start = text.find("{")
    try:
        return dict(json.loads(text[start:])) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def _flwr_many(flwr_home: Path, commands: list[list[str]],
               timeout: float = 120.0) -> list[dict[str, Any]]:
    """Run several ``flwr`` CLI commands (with ``--format json``) in one Python process."""
    proc = subprocess.run([sys.executable, "-c", _FLWR_MANY, *(_SEP.join(c) for c in commands)],
                          capture_output=True, env=flower_env(flwr_home), timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)
    text = proc.stdout.decode(errors="replace")
    parts = [text.split(f"@@hemafed-{i}@@", 1)[1] if f"@@hemafed-{i}@@" in text else ""
             for i in range(len(commands))]
    parts = [p.split("@@hemafed-", 1)[0] for p in parts]
    outputs = [_parse_json(p) for p in parts]
    if proc.returncode != 0 or not all(outputs):
        raise ProtocolError(f"flwr {' '.join(commands[0][:2])} failed (exit {proc.returncode}): "
                            f"{text.strip()[-800:]} {proc.stderr.decode(errors='replace')[-800:]}")
    return outputs


def _flwr(flwr_home: Path, args: list[str], timeout: float = 120.0) -> dict[str, Any]:
    """Run one ``flwr`` CLI command with ``--format json`` and return its JSON output."""
    return _flwr_many(flwr_home, [args], timeout=timeout)[0]


def register_keys(flwr_home: Path, public_keys: Sequence[str | os.PathLike[str]]) -> list[int]:
    """Register SuperNode public keys (``flwr supernode register``); return their node ids.

    ``flwr_home`` holds the connection (:func:`write_connection`). All keys go through one
    ``flwr`` CLI process, since each CLI start costs seconds.
    """
    if not public_keys:
        return []
    outputs = _flwr_many(flwr_home, [
        ["supernode", "register", str(key), CONNECTION, "--format", "json"]
        for key in public_keys])
    node_ids = []
    for key, out in zip(public_keys, outputs, strict=True):
        if not out.get("success") or out.get("node-id") is None:
            raise ProtocolError(f"registering SuperNode key {key} failed: {out}")
        node_ids.append(int(out["node-id"]))
    return node_ids


def progress_events(path: Path) -> list[dict[str, Any]]:
    """The exchanges the ServerApp has reported so far in ``path`` (one JSON line each).

    The file grows while the run goes on, so a last line still being written is left for the
    next read rather than failing the run.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(ln) for ln in lines if ln.endswith("}")]


def submit_run(flwr_home: Path, job_dir: Path, hub_main: str, config: Mapping[str, Any], *,
               expected_sites: int | None, timeout: float, connect_timeout: float,
               run_timeout: float, watch: list[subprocess.Popen[bytes]] | None = None,
               app_dir: Path = APP_DIR,
               on_progress: Callable[[dict[str, Any]], None] | None = None,
               hold: float | None = None) -> dict[str, Any]:
    """``flwr run`` the shipped Flower App for one hub protocol and wait for its result file.

    ``on_progress`` gets one dict per exchange (``exchange``, ``answered``, ``dropped``,
    ``seconds``) as the ServerApp reports it. ``hold``: seconds of the hold message sent behind
    every message to keep the sites' SuperNodes from their 3 s idle sleep (default
    :data:`~hemafed.federation.flower.apps.DEFAULT_HOLD_SECONDS`; 0: none, e.g. for Flower's
    default SuperNodes, which would start a process per hold)."""
    load_object(hub_main, what="hub_main")
    hold = DEFAULT_HOLD_SECONDS if hold is None else float(hold)
    if not 0 <= hold < math.inf:
        raise InvalidInput(f"hold must be >= 0 seconds (0: no holds), got {hold}")
    if "'" in str(job_dir):
        raise InvalidInput(f"{str(job_dir)!r} contains a single quote; the run config cannot "
                           "carry it")
    job_dir = job_dir.resolve()
    request = {"hub_main": hub_main, "config": dict(config), "expected_sites": expected_sites,
               "timeout": timeout, "connect_timeout": connect_timeout, "hold": hold}
    atomic.write_text(job_dir / REQUEST_FILE, json.dumps(request))
    started = time.monotonic()
    out = _flwr(flwr_home, ["run", str(app_dir), CONNECTION, "--run-config",
                            f"job-dir='{job_dir}'", "--format", "json"])
    log.info("submitted run %s (job %s)", out.get("run-id"), job_dir.name)
    deadline = started + run_timeout
    seen = 0
    while time.monotonic() < deadline:
        if on_progress is not None:
            events = progress_events(job_dir / PROGRESS_FILE)
            for event in events[seen:]:
                on_progress(event)
            seen = len(events)
        if (job_dir / RESULT_FILE).exists():
            body = json.loads((job_dir / RESULT_FILE).read_text(encoding="utf-8"))
            body["result"] = decode_result(json.dumps(body["result"]))
            body["run_id"] = out.get("run-id")
            return dict(body)
        if (job_dir / ERROR_FILE).exists():
            err = json.loads((job_dir / ERROR_FILE).read_text(encoding="utf-8"))
            raise ProtocolError(f"run {out.get('run-id')} failed on the hub: {err['error']}")
        for proc in watch or []:
            if proc.poll() is not None:
                raise ProtocolError(f"SuperLink process {proc.pid} exited with code "
                                    f"{proc.returncode} while run {out.get('run-id')} was going")
        time.sleep(0.2)
    raise ProtocolError(f"run {out.get('run-id')} gave no result within {run_timeout:g} s; "
                        f"see the SuperLink log and {job_dir}")


@contextlib.contextmanager
def local_deployment(workdir: str | os.PathLike[str], site_dirs: list[str | os.PathLike[str]],
                     **start_kwargs: Any) -> Iterator[Deployment]:
    """Start a SuperLink and one registered SuperNode per site dir; always stop them after."""
    dep = Deployment.start(workdir, **start_kwargs)
    try:
        dep.add_sites(site_dirs)
        yield dep
    finally:
        dep.stop()
