"""Flower simulation transport: N virtual sites on this machine through Flower's Simulation Runtime.

This drives the simulation the way Flower 1.42 supports it (``run_simulation`` from Python is
deprecated): a local ``flower-superlink --simulation --insecure`` bound to 127.0.0.1 on a free
port, and ``flwr run <app> <connection> --federation-config "num-supernodes=N ..."`` of a Flower
App whose components are hemafed's own:

* ServerApp: :data:`hemafed.federation.flower.apps.server_app`, the same one deployment runs; it
  reads ``job-dir/request.json`` (which ``hub_main``, its config, timeouts) and writes
  ``job-dir/result.json``;
* ClientApp: :data:`client_app` below: virtual SuperNode ``partition-id`` *i* is ``sites[i]`` of
  ``job-dir/sites.json``, answered by :func:`~hemafed.federation.flower.apps.make_client_app`
  (the same hello/exchange protocol as in deployment).

The SuperLink runs each run in a ``flwr-simulation`` process (Ray backend by default) and writes
everything it prints to ``job-dir/logs/superlink.log``, so a normal run prints nothing from Flower
or Ray. Every process started here is stopped, with its descendants, by PID when the run ends.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from hemafed import atomic
from hemafed.errors import ProtocolError
from hemafed.federation.flower.apps import ERROR_FILE, REQUEST_FILE, RESULT_FILE, make_client_app
from hemafed.federation.flower.deployment import (
    CONNECTION,
    _flwr,
    flower_command,
    flower_env,
    free_port,
    stop_processes,
    wait_for_port,
)
from hemafed.federation.transport import (
    HubMain,
    check_sites,
    decode_result,
    load_handler_factory,
    load_hub_main,
    normalise_result,
)

log = logging.getLogger(__name__)

SITES_FILE = "sites.json"

# The Flower App submitted with ``flwr run``: no code, its components live in hemafed.
APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "hemafed-simulation"
version = "0.1.0"
description = "hemafed hub/site protocol in Flower's Simulation Runtime"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "hemafed"

[tool.flwr.app.components]
serverapp = "hemafed.federation.flower.apps:server_app"
clientapp = "hemafed.federation.flower.simulation:client_app"

[tool.flwr.app.config]
job-dir = ""
handler-factory = ""
"""


def _simulated_site(message: Message, context: Context) -> Message:
    """Answer one message as site ``partition-id`` of the run's ``sites.json``."""
    job_dir = Path(str(context.run_config.get("job-dir", "")))
    sites = json.loads((job_dir / SITES_FILE).read_text(encoding="utf-8"))
    handler_factory = str(context.run_config.get("handler-factory", ""))
    return make_client_app(sites=sites, handler_factory=handler_factory)(message, context)


client_app = ClientApp()
client_app.query("hemafed")(_simulated_site)


def _write_connection(flwr_home: Path, address: str) -> None:
    """``$FLWR_HOME/config.toml`` with one insecure loopback connection to the local SuperLink."""
    atomic.write_text(flwr_home / "config.toml",
                      f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                      f'address = "{address}"\ninsecure = true\n')


def _federation_config(n_sites: int, backend: str, num_cpus: int, client_cpus: float) -> str:
    # Flower's simulation config takes whole CPUs per virtual site; Ray's CPUs are logical, so
    # "num_cpus / client_cpus sites at once" becomes that many logical CPUs of one each.
    concurrent = max(1, math.floor(num_cpus / client_cpus + 1e-9)) if client_cpus > 0 else n_sites
    parts = [f"num-supernodes={n_sites}", f"backend='{backend}'",
             "client-resources-num-cpus=1", "client-resources-num-gpus=0.0"]
    if backend == "ray":
        parts += [f"init-args-num-cpus={concurrent}", "init-args-num-gpus=0",
                  "init-args-logging-level='warning'", "init-args-log-to-driver=false"]
    return " ".join(parts)


def run_in_simulation(hub_main: HubMain | str, handler_factory: str,
                      sites: Sequence[Mapping[str, Any]], config: Mapping[str, Any], *,
                      timeout: float = 30.0, connect_timeout: float = 60.0,
                      backend: str = "ray", num_cpus: int = 2, client_cpus: float = 0.2,
                      stats: dict[str, Any] | None = None, run_timeout: float = 3600.0,
                      workdir: str | Path | None = None) -> Any:
    """Run ``hub_main`` against ``sites`` in Flower's simulation runtime; return its result.

    ``hub_main`` and ``handler_factory`` are ``"module:function"`` strings (a ``hub_main``
    callable is accepted if it is importable by name); both are imported in Flower's processes.
    ``timeout`` bounds each exchange; sites that answer later are dropped. ``num_cpus /
    client_cpus`` sites run at once. ``run_timeout`` bounds the whole run. If ``stats`` is a dict
    it receives ``exchange_seconds`` (wall time of each exchange). ``workdir`` keeps the job
    directory (request, result, Flower logs); by default a temporary one is removed afterwards.
    """
    hub_name = hub_main if isinstance(hub_main, str) else _qualified_name(hub_main)
    load_hub_main(hub_name)  # fail here, not in Flower's process, if a name is wrong
    load_handler_factory(handler_factory)
    checked = check_sites(sites)
    if workdir is not None:
        return _run(Path(workdir), hub_name, handler_factory, checked, config, timeout,
                    connect_timeout, backend, num_cpus, client_cpus, stats, run_timeout)
    with tempfile.TemporaryDirectory(prefix="hemafed-sim-") as tmp:
        return _run(Path(tmp), hub_name, handler_factory, checked, config, timeout,
                    connect_timeout, backend, num_cpus, client_cpus, stats, run_timeout)


def _qualified_name(hub_main: HubMain) -> str:
    module, name = getattr(hub_main, "__module__", ""), getattr(hub_main, "__qualname__", "")
    if not module or not name or "<" in name:
        raise ProtocolError("the simulation runs the hub in Flower's own process: pass hub_main "
                            "as a 'module:function' string or a module-level function")
    return f"{module}:{name}"


def _run(work: Path, hub_main: str, handler_factory: str, sites: list[dict[str, Any]],
         config: Mapping[str, Any], timeout: float, connect_timeout: float, backend: str,
         num_cpus: int, client_cpus: float, stats: dict[str, Any] | None,
         run_timeout: float) -> Any:
    work = work.resolve()
    job_dir, flwr_home, app_dir = work / "job", work / "flwr-home", work / "app"
    for folder in (job_dir, flwr_home, app_dir, work / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(app_dir / "pyproject.toml", APP_PYPROJECT)
    atomic.write_text(job_dir / SITES_FILE, json.dumps(sites))
    port = free_port()
    address = f"127.0.0.1:{port}"
    _write_connection(flwr_home, address)
    with open(work / "logs" / "superlink.log", "ab") as log_file:
        superlink = subprocess.Popen(
            [flower_command("flower-superlink"), "--insecure", "--simulation", "--host",
             "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=flower_env(flwr_home), start_new_session=True)
        log.info("started simulation SuperLink (pid %d) on %s", superlink.pid, address)
        try:
            wait_for_port("127.0.0.1", port, 60.0, superlink)
            # no holds (KeepWarm): the simulation engine writes back the context each message
            # was started with, and a hold answered after the exchange message it follows
            # would put back the site's state from before that message (a lost session)
            request = {"hub_main": hub_main, "config": dict(config),
                       "expected_sites": len(sites), "timeout": timeout,
                       "connect_timeout": connect_timeout, "hold": 0.0}
            atomic.write_text(job_dir / REQUEST_FILE, json.dumps(request))
            out = _flwr(flwr_home, [
                "run", str(app_dir), CONNECTION, "--run-config",
                f"job-dir='{job_dir}' handler-factory='{handler_factory}'",
                "--federation-config",
                _federation_config(len(sites), backend, num_cpus, client_cpus),
                "--format", "json"])
            body = _wait_for_result(job_dir, out.get("run-id"), superlink, run_timeout)
        finally:
            stop_processes([superlink])
    for drop in body.get("drops", []):  # the hub's own log stays in Flower's process
        log.warning("simulation exchange %s: site %s dropped (%s)", drop.get("exchange"),
                    drop.get("site"), drop.get("reason"))
    if stats is not None:
        stats["exchange_seconds"] = body.get("exchange_seconds", [])
        stats["drops"] = body.get("drops", [])
        stats["holds_sent"] = body.get("holds_sent", 0)
    return normalise_result(body["result"])


def _wait_for_result(job_dir: Path, run_id: Any, superlink: subprocess.Popen[bytes],
                     run_timeout: float) -> dict[str, Any]:
    """Wait for the ServerApp's ``result.json`` (or ``error.json``) in ``job_dir``."""
    deadline = time.monotonic() + run_timeout
    while time.monotonic() < deadline:
        if (job_dir / RESULT_FILE).exists():
            body = json.loads((job_dir / RESULT_FILE).read_text(encoding="utf-8"))
            body["result"] = decode_result(json.dumps(body["result"]))
            return dict(body)
        if (job_dir / ERROR_FILE).exists():
            err = json.loads((job_dir / ERROR_FILE).read_text(encoding="utf-8"))
            raise ProtocolError(f"simulation run {run_id} failed on the hub: {err['error']}")
        if superlink.poll() is not None:
            raise ProtocolError(f"the simulation SuperLink exited with code "
                                f"{superlink.returncode} during run {run_id}; see "
                                f"{job_dir.parent / 'logs' / 'superlink.log'}")
        time.sleep(0.2)
    raise ProtocolError(f"simulation run {run_id} gave no result within {run_timeout:g} s; see "
                        f"{job_dir.parent / 'logs' / 'superlink.log'}")
