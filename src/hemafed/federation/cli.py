"""``hemafed hub ...`` and ``hemafed site ...`` commands: a thin layer over the Flower deployment.

Mounted by ``hemafed.cli`` as ``app.add_typer(hub_app, name="hub")`` and
``app.add_typer(site_app, name="site")``. A typical pilot:

    hemafed hub start --certs certs/ --make-test-certs --port 9092          # on the hub
    hemafed site keygen keys/ --name site-a                                 # at each site
    hemafed hub register keys/site-a.pub --hub 127.0.0.1:9092 --ca certs/ca.pem
    hemafed site serve /data/site-a --hub 127.0.0.1:9092 --ca certs/ca.pem --key keys/site-a
    hemafed hub run --hub 127.0.0.1:9092 --ca certs/ca.pem --expected-sites 1  # probe by default
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Annotated

import typer

from hemafed.federation.flower.certificates import (
    ServerCertificates,
    make_node_auth_keys,
    make_test_ca_and_server_cert,
)
from hemafed.federation.flower.deployment import (
    DEFAULT_HANDLER_FACTORY,
    DEFAULT_HUB_MAIN,
    Deployment,
    flower_env,
    free_port,
    register_keys,
    stop_processes,
    submit_run,
    supernode_command,
    write_connection,
)
from hemafed.federation.transport import check_site_id, encode_result

hub_app = typer.Typer(help="The hub: a Flower SuperLink with TLS and SuperNode authentication.",
                      no_args_is_help=True)
site_app = typer.Typer(help="A site: a Flower SuperNode serving one site directory.",
                       no_args_is_help=True)

_Hub = Annotated[str, typer.Option("--hub", help="SuperLink address HOST:PORT")]
_Ca = Annotated[Path, typer.Option("--ca", exists=True, dir_okay=False,
                                   help="CA certificate (PEM) of the hub")]
_WORKDIR = typer.Option(Path(".hemafed-hub"), "--workdir",
                        help="hub-side working directory (flwr connection, run jobs)")


def _connection(workdir: Path, hub: str, ca: Path) -> Path:
    home = workdir.resolve() / "flwr-home"
    write_connection(home, hub, ca.resolve())
    return home


@hub_app.command("start")
def hub_start(certs: Annotated[Path, typer.Option("--certs", help="directory with ca.pem, "
                                                  "server.pem, server.key")],
              port: int = typer.Option(9092, "--port", help="port of the SuperLink API"),
              host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
              make_test_certs: bool = typer.Option(False, "--make-test-certs",
                                                   help="create a test CA and certificate in "
                                                   "--certs if none is there"),
              workdir: Path = _WORKDIR) -> None:
    """Start the SuperLink (TLS, SuperNode authentication, no runtime installs) until Ctrl-C."""
    paths = ServerCertificates(certs / "ca.pem", certs / "server.pem", certs / "server.key")
    if not all(p.is_file() for p in (paths.ca_cert, paths.server_cert, paths.server_key)):
        if not make_test_certs:
            raise typer.BadParameter(f"{certs} must hold ca.pem, server.pem and server.key "
                                     "(or pass --make-test-certs)", param_hint="--certs")
        paths = make_test_ca_and_server_cert(certs, hosts=(host, "localhost"))
    dep = Deployment.start(workdir, certs=paths, host=host, port=port)
    typer.echo(f"SuperLink on {dep.address} (log: {dep.workdir / 'logs' / 'superlink.log'})",
               err=True)
    try:
        dep.processes[0].wait()
    except KeyboardInterrupt:
        pass
    finally:
        dep.stop()


@hub_app.command("register")
def hub_register(public_keys: Annotated[list[Path], typer.Argument(
                     exists=True, dir_okay=False, help="SuperNode public key files")],
                 hub: _Hub, ca: _Ca, workdir: Path = _WORKDIR) -> None:
    """Allow SuperNodes to connect: register their public keys at the SuperLink."""
    node_ids = register_keys(_connection(workdir, hub, ca), [str(p) for p in public_keys])
    for key, node_id in zip(public_keys, node_ids, strict=True):
        typer.echo(f"{key}\t{node_id}")


@hub_app.command("run")
def hub_run(hub: _Hub, ca: _Ca,
            hub_main: str = typer.Option(DEFAULT_HUB_MAIN, "--hub-main",
                                         help="module:function of the hub protocol"),
            handler_factory: str = typer.Option(DEFAULT_HANDLER_FACTORY, "--handler-factory",
                                                help="module:function of the site handler factory"),
            config: str = typer.Option("{}", "--config", help="hub config as a JSON object"),
            expected_sites: int = typer.Option(0, "--expected-sites",
                                               help="wait for this many sites (0: those online)"),
            timeout: float = typer.Option(60.0, "--timeout", help="seconds per exchange"),
            run_timeout: float = typer.Option(600.0, "--run-timeout", help="seconds for the run"),
            workdir: Path = _WORKDIR) -> None:
    """Submit a run to the SuperLink and print its result as JSON (run this on the hub)."""
    try:
        hub_config = json.loads(config)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"not JSON: {err}", param_hint="--config") from err
    home = _connection(workdir, hub, ca)
    job_dir = workdir.resolve() / "jobs" / uuid.uuid4().hex[:12]
    body = submit_run(home, job_dir, hub_main, handler_factory, hub_config,
                      expected_sites=expected_sites or None, timeout=timeout,
                      connect_timeout=timeout, run_timeout=run_timeout)
    typer.echo(json.dumps({"result": json.loads(encode_result(body["result"])),
                           "sites": body["sites"], "exchange_seconds": body["exchange_seconds"]},
                          indent=2))


@site_app.command("keygen")
def site_keygen(directory: Annotated[Path, typer.Argument(help="where to write the key pair")],
                name: Annotated[str, typer.Option("--name", help="key file name, e.g. site id")]
                ) -> None:
    """Create a SuperNode authentication key pair; give the .pub file to the hub to register."""
    keys = make_node_auth_keys(directory, check_site_id(name))
    typer.echo(f"private key: {keys.private_key}\npublic key:  {keys.public_key}")


@site_app.command("serve")
def site_serve(site_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                                        help="the site directory")],
               hub: _Hub, ca: _Ca,
               key: Annotated[Path, typer.Option("--key", exists=True, dir_okay=False,
                                                 help="SuperNode private key (registered)")],
               site_id: str = typer.Option("", "--site-id", help="default: directory name"),
               port: int = typer.Option(0, "--port", help="local runtime API port (0: free)")
               ) -> None:
    """Run a SuperNode for SITE_DIR connected to the hub, until Ctrl-C."""
    site_path = site_dir.resolve()
    sid = check_site_id(site_id or site_path.name)
    command = supernode_command(hub, ca.resolve(), key.resolve(), site_path, sid,
                                runtime_port=port or free_port())
    proc = subprocess.Popen(command, env=flower_env(), start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        stop_processes([proc])
    raise typer.Exit(code)
