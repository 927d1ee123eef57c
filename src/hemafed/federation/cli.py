"""``hemafed hub ...`` and ``hemafed site ...`` commands: a thin layer over the Flower deployment.

Mounted by ``hemafed.cli`` as ``app.add_typer(hub_app, name="hub")`` plus the ``site serve``,
``site keygen`` and ``site app-hash`` commands. A typical pilot (see docs/operator-guide.md):

    hemafed hub start --certs certs/ --make-test-certs --port 9092          # on the hub
    hemafed site keygen keys/ --name site-a                                 # at each site
    hemafed hub register keys/site-a.pub --hub 127.0.0.1:9092 --ca certs/ca.pem
    hemafed site serve /data/site-a --hub 127.0.0.1:9092 --ca certs/ca.pem --key keys/site-a
    hemafed hub run study.yaml --manifest federation.json --hub 127.0.0.1:9092 --ca certs/ca.pem

``hub start`` and ``site serve`` run until SIGINT or SIGTERM and then stop every process they
started (SuperLink, SuperNode, site worker, Flower's SuperExec and app processes) by PID.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from hemafed.errors import HemafedError
from hemafed.federation.flower.certificates import (
    ServerCertificates,
    make_node_auth_keys,
    make_test_ca_and_server_cert,
)
from hemafed.federation.flower.deployment import (
    DEFAULT_HANDLER_FACTORY,
    Deployment,
    flower_env,
    free_port,
    register_keys,
    stop_processes,
    submit_run,
    supernode_command,
    wait_for_port,
    worker_command,
    write_connection,
)
from hemafed.federation.transport import check_site_id

hub_app = typer.Typer(help="The hub: a Flower SuperLink with TLS and SuperNode authentication.",
                      no_args_is_help=True)
site_app = typer.Typer(help="A site: a Flower SuperNode serving one site directory.",
                       no_args_is_help=True)

_Hub = Annotated[str, typer.Option("--hub", help="SuperLink address HOST:PORT")]
_Ca = Annotated[Path, typer.Option("--ca", exists=True, dir_okay=False,
                                   help="CA certificate (PEM) of the hub")]
_WORKDIR = typer.Option(Path(".hemafed-hub"), "--workdir",
                        help="hub-side working directory (flwr connection, run jobs)")


class _Stopped(Exception):
    """Raised in the main thread by SIGTERM, so that ``finally`` stops the children."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def _connection(workdir: Path, hub: str, ca: Path) -> Path:
    home = workdir.resolve() / "flwr-home"
    write_connection(home, hub, ca.resolve())
    return home


def _fail(exc: HemafedError) -> typer.Exit:
    typer.secho(str(exc), fg="red", err=True)
    return typer.Exit(1)


@hub_app.command("start")
def hub_start(certs: Annotated[Path, typer.Option("--certs", help="directory with ca.pem, "
                                                  "server.pem, server.key")],
              port: int = typer.Option(9092, "--port", help="port of the SuperLink API"),
              host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
              make_test_certs: bool = typer.Option(False, "--make-test-certs",
                                                   help="create a test CA and certificate in "
                                                   "--certs if none is there"),
              workdir: Path = _WORKDIR) -> None:
    """Start the SuperLink (TLS, SuperNode authentication, no runtime installs) until stopped."""
    paths = ServerCertificates(certs / "ca.pem", certs / "server.pem", certs / "server.key")
    if not all(p.is_file() for p in (paths.ca_cert, paths.server_cert, paths.server_key)):
        if not make_test_certs:
            raise typer.BadParameter(f"{certs} must hold ca.pem, server.pem and server.key "
                                     "(or pass --make-test-certs)", param_hint="--certs")
        paths = make_test_ca_and_server_cert(certs, hosts=(host, "localhost"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        dep = Deployment.start(workdir, certs=paths, host=host, port=port)
    except HemafedError as exc:
        raise _fail(exc) from exc
    typer.echo(f"SuperLink on {dep.address} (log: {dep.workdir / 'logs' / 'superlink.log'})",
               err=True)
    code = 0
    try:
        code = dep.superlink.wait() if dep.superlink is not None else 0
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        dep.stop()
    raise typer.Exit(code)


@hub_app.command("register")
def hub_register(public_keys: Annotated[list[Path], typer.Argument(
                     exists=True, dir_okay=False, help="SuperNode public key files")],
                 hub: _Hub, ca: _Ca, workdir: Path = _WORKDIR,
                 wait: float = typer.Option(60.0, "--wait",
                                            help="seconds to wait for the SuperLink")) -> None:
    """Allow SuperNodes to connect: register their public keys at the SuperLink.

    Waits up to ``--wait`` seconds for the SuperLink to accept connections (e.g. just started).
    """
    host, _, port = hub.rpartition(":")
    try:
        if not port.isdigit():
            raise HemafedError(f"--hub {hub!r} must be HOST:PORT")
        wait_for_port(host, int(port), wait)
        node_ids = register_keys(_connection(workdir, hub, ca), [str(p) for p in public_keys])
    except HemafedError as exc:
        raise _fail(exc) from exc
    for key, node_id in zip(public_keys, node_ids, strict=True):
        typer.echo(f"{key}\t{node_id}")


class _ProgressView:
    """Shows the exchanges of a deployed run as they happen (rich status line)."""

    def __init__(self, sites: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.started = time.monotonic()
        self.sites = sites
        self.status = self.console.status("waiting for the sites ...")

    def __call__(self, event: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        answered = event.get("answered", [])
        dropped = event.get("dropped", [])
        line = (f"exchange {event.get('exchange', 0) + 1}: {len(answered)} site(s) answered"
                f"{'; dropped ' + ', '.join(dropped) if dropped else ''} "
                f"({event.get('seconds', 0):.2f} s; {elapsed:.0f} s elapsed)")
        self.status.update(line)
        if dropped:
            self.console.print(f"[yellow]{line}[/yellow]")


@hub_app.command("run")
def hub_run(spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                 help="study specification (YAML)")],
            manifest: Annotated[Path, typer.Option("--manifest", exists=True, dir_okay=False,
                                                   help="federation.json the sites joined")],
            hub: _Hub, ca: _Ca,
            out: Path = typer.Option(Path("study-out"), "--out",
                                     help="folder for results.json and report.html"),
            expected_sites: int = typer.Option(0, "--expected-sites",
                                               help="wait for this many sites (0: the manifest's)"),
            timeout: float = typer.Option(120.0, "--timeout", help="seconds per exchange"),
            run_timeout: float = typer.Option(3600.0, "--run-timeout",
                                              help="seconds for the whole study"),
            workdir: Path = _WORKDIR) -> None:
    """Run a study on the running federation; write results.json and report.html to --out."""
    from hemafed.atomic import write_text
    from hemafed.secure import FederationManifest
    from hemafed.study.report import write_report
    from hemafed.study.spec import StudySpec

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        parsed = StudySpec.load(spec)
        fed_manifest = FederationManifest.load(manifest)
        expected = expected_sites or len(fed_manifest.sites)
        home = _connection(workdir, hub, ca)
        job_dir = workdir.resolve() / "jobs" / uuid.uuid4().hex[:12]
        view = _ProgressView(expected)
        with view.status:
            body = submit_run(home, job_dir, "hemafed.study.hub:study_hub_main",
                              {"spec": dict(parsed.raw), "manifest": fed_manifest.to_json()},
                              expected_sites=expected, timeout=timeout,
                              connect_timeout=timeout, run_timeout=run_timeout,
                              on_progress=view)
    except HemafedError as exc:
        raise _fail(exc) from exc
    except _Stopped:
        typer.secho("stopped; the run keeps going on the SuperLink until it ends or is "
                    "stopped with `flwr stop`", fg="yellow", err=True)
        raise typer.Exit(130) from None
    results = body["result"]
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    report = write_report(results, out / "report.html",
                          subtitle=f"{len(body['sites'])} deployed sites; transport: deployment")
    seconds = body.get("exchange_seconds", [])
    typer.echo(f"results: {out / 'results.json'}; report: {report}; "
               f"{len(seconds)} exchanges, {sum(seconds):.1f} s", err=True)
    failed = [a["id"] for a in results.get("analyses", []) if a.get("status") != "ok"]
    if failed:
        typer.secho(f"did not complete: {', '.join(failed)}", fg="yellow", err=True)
        raise typer.Exit(2)


@site_app.command("keygen")
def site_keygen(directory: Annotated[Path, typer.Argument(help="where to write the key pair")],
                name: Annotated[str, typer.Option("--name", help="key file name, e.g. site id")]
                ) -> None:
    """Create a SuperNode authentication key pair; give the .pub file to the hub to register."""
    keys = make_node_auth_keys(directory, check_site_id(name))
    typer.echo(f"private key: {keys.private_key}\npublic key:  {keys.public_key}")


def site_app_hash() -> None:
    """Print the SHA-256 of the hemafed Flower app installed here (what `site serve` runs)."""
    from hemafed.federation.flower.site_worker import installed_app_sha256

    typer.echo(installed_app_sha256())


@site_app.command("serve")
def site_serve(site_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                                        help="the site directory")],
               hub: _Hub, ca: _Ca,
               key: Annotated[Path, typer.Option("--key", exists=True, dir_okay=False,
                                                 help="SuperNode private key (registered)")],
               port: int = typer.Option(0, "--port", help="local runtime API port (0: free)"),
               handler_factory: str = typer.Option(
                   DEFAULT_HANDLER_FACTORY, "--handler-factory", hidden=True,
                   help="module:function of the site handler (a site setting, for tests)"),
               app_sha256: Annotated[list[str] | None, typer.Option(
                   "--app-sha256", help="also run the Flower app with this hash (repeat)")
               ] = None) -> None:
    """Serve SITE_DIR to the hub (a SuperNode and the site worker) until stopped.

    The site id is the one in SITE_DIR/site.yaml. Only the hemafed Flower app installed here
    (or a hash listed in site.yaml's ``trusted_flower_apps``) runs; any other app the hub
    submits is refused without running and the refusal is written to the audit log.
    """
    from hemafed.federation.flower.site_worker import (
        ensure_runtime_secret,
        pinned_app_hashes,
        site_identity,
    )

    site_path = site_dir.resolve()
    try:
        sid = site_identity(site_path)
        pinned_app_hashes(site_path, app_sha256 or [])  # a bad site.yaml fails here
        secret = ensure_runtime_secret(site_path)  # only the worker may take the node's tasks
    except HemafedError as exc:
        raise _fail(exc) from exc
    runtime_port = port or free_port()
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs: list[subprocess.Popen[bytes]] = []
    code = 0
    try:
        node = subprocess.Popen(supernode_command(hub, ca.resolve(), key.resolve(), site_path,
                                                  sid, runtime_port=runtime_port,
                                                  auth_secret_file=secret),
                                env=flower_env(), start_new_session=True)
        procs.append(node)
        procs.append(subprocess.Popen(worker_command(
            f"127.0.0.1:{runtime_port}", site_path, sid, handler_factory=handler_factory,
            trusted_app_sha256=app_sha256 or [], supernode_pid=node.pid,
            auth_secret_file=secret),
            env=flower_env(), start_new_session=True))
        typer.echo(f"site {sid}: SuperNode pid {node.pid}, site worker pid {procs[1].pid}",
                   err=True)
        while code == 0:
            for proc in procs:
                if proc.poll() is not None:
                    code = proc.returncode or 1
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stopped):
        code = 0
    finally:
        stop_processes(procs)
    raise typer.Exit(code)
