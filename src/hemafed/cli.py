"""The ``hemafed`` command. Sub-commands live beside the code they drive and are mounted here.

Start-up is lazy: a sub-app's module (and the numpy/pandas/Flower it imports) is loaded only when
that sub-app runs, so ``hemafed --help`` stays fast. To mount a new sub-app, add one line to
:data:`SUBAPPS`: ``"name": ("package.module:attribute", "one-line help")``, where the attribute is
a ``typer.Typer`` or a function returning one.

Errors: a :class:`~hemafed.errors.HemafedError` (or any other exception) ends the command with one
line on stderr and exit code 1; ``hemafed --debug ...`` (or ``HEMAFED_DEBUG=1``) shows the
traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any, ClassVar

import click
import typer
from typer.core import TyperGroup

from hemafed import __version__

# name -> ("module:attribute", help shown in `hemafed --help`); loaded on first use.
SUBAPPS: dict[str, tuple[str, str]] = {
    "site": ("hemafed.cli:site_subapp", "A hospital's site: intake, policy, audit, vault, serve."),
    "hub": ("hemafed.cli:hub_subapp", "The hub: Flower SuperLink with TLS and node auth."),
    "score": ("hemafed.scores.cli:app", "White-box clinical scores with explanations."),
    "study": ("hemafed.study.cli:study_app", "Validate and run study specifications."),
    "synth": ("hemafed.synth.cli:app",
              "Synthetic virtual patients (federated DP MST) and their evaluation."),
    "genomics": ("hemafed.genomics.cli:app", "Genotype intake and the virtual SCD cohort."),
}

_DEBUG = {"on": os.environ.get("HEMAFED_DEBUG", "") not in ("", "0")}


def site_subapp() -> typer.Typer:
    """``hemafed site``: the site CLI plus the federation commands a site runs."""
    # the analysis kinds and the planner that `approve` and `check` read the specs with
    import hemafed.study.plan  # noqa: F401
    from hemafed.federation.cli import site_app_hash, site_keygen, site_serve
    from hemafed.site.cli import app as site_app
    from hemafed.site.membership_cli import site_identity, site_join

    commands: dict[str, Any] = {"serve": site_serve, "keygen": site_keygen,
                                "app-hash": site_app_hash, "identity": site_identity,
                                "join": site_join}
    try:  # the site console needs the `service` extra
        from hemafed.service.cli import site_catalogue_approve, site_console
        commands["console"] = site_console
        commands["catalogue-approve"] = site_catalogue_approve
    except ImportError:
        pass
    _mount(site_app, commands)
    try:  # hemafed site import-images / extract-features need the `imaging` extra
        from hemafed.imaging.cli import mount as mount_imaging
    except ImportError:
        pass
    else:
        if "import-images" not in {c.name for c in site_app.registered_commands}:
            mount_imaging(site_app)
    return site_app


def hub_subapp() -> typer.Typer:
    """``hemafed hub``: the hub CLI plus the federation manifest."""
    from hemafed.federation.cli import hub_app
    from hemafed.federation.membership_cli import hub_manifest

    commands: dict[str, Any] = {"manifest": hub_manifest}
    try:  # the hub service needs the `service` extra
        from hemafed.service.cli import hub_serve
        commands["serve"] = hub_serve
    except ImportError:
        pass
    _mount(hub_app, commands)
    return hub_app


def _mount(typer_app: typer.Typer, commands: dict[str, Any]) -> None:
    """Add commands to a sub-app once (loading it twice must not register them twice)."""
    present = {c.name for c in typer_app.registered_commands}
    for name, function in commands.items():
        if name not in present:
            typer_app.command(name)(function)


def load_subapp(name: str) -> click.Command:
    """Import the sub-app mounted as ``name`` and return its click command."""
    target, help_text = SUBAPPS[name]
    module_name, _, attribute = target.partition(":")
    obj: Any = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(obj, typer.Typer):
        obj = obj()
    command = typer.main.get_command(obj)
    command.help = command.help or help_text
    command.short_help = help_text
    return command


class LazyGroup(TyperGroup):
    """A Typer group whose sub-apps in :data:`SUBAPPS` are imported only when used.

    Help listings show the one-line help from :data:`SUBAPPS` without importing anything.
    """

    _listing = False
    _loaded: ClassVar[dict[str, click.Command]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in SUBAPPS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBAPPS or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return click.Command(cmd_name, help=SUBAPPS[cmd_name][1],
                                 short_help=SUBAPPS[cmd_name][1])
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load_subapp(cmd_name)
        return self._loaded[cmd_name]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        LazyGroup._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            LazyGroup._listing = False


class HemafedApp(typer.Typer):
    """The ``hemafed`` Typer app: one clear line per error; the traceback only with --debug."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return typer.main.get_command(self)(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            sys.exit(report_error(exc))


def report_error(exc: BaseException) -> int:
    """Print ``exc`` for a user (one message) or, with --debug, its traceback; return exit 1."""
    from hemafed.errors import HemafedError

    if _DEBUG["on"]:
        traceback.print_exception(exc)
        return 1
    if isinstance(exc, HemafedError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.strerror or exc}: {exc.filename}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    typer.echo(f"error: {message}", err=True)
    typer.echo("(run `hemafed --debug ...` to see the traceback)", err=True)
    return 1


app = HemafedApp(help="hemafed: federated analysis for haematology research networks.",
                 cls=LazyGroup, no_args_is_help=True, add_completion=False,
                 pretty_exceptions_enable=False)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details"),
          debug: bool = typer.Option(False, "--debug",
                                     help="show the Python traceback when a command fails")
          ) -> None:
    import logging

    _DEBUG["on"] = _DEBUG["on"] or debug
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # libraries with their own loggers (Flower logs at DEBUG) propagate to our handler: filter
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    logging.getLogger("flwr").setLevel(level)


@app.command()
def version() -> None:
    """Print the hemafed version."""
    typer.echo(__version__)


@app.command()
def schema(disease: str = typer.Option("", help="only the fields of one disease (MDS, AML, ...)"),
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the canonical cohort fields with their units, ranges and codes."""
    import json

    from hemafed.cohort.schema import DISEASES, FIELDS
    from hemafed.errors import InvalidInput

    if disease and disease not in DISEASES:
        raise InvalidInput(f"--disease: unknown disease {disease!r}; expected one of "
                           f"{', '.join(DISEASES)}")
    fields = [f for f in FIELDS.values() if not disease or disease in f.diseases]
    if as_json:
        typer.echo(json.dumps([f.__dict__ for f in fields], indent=2, default=list))
        return
    for f in fields:
        rng = f"[{f.low:g}, {f.high:g}]" if f.low is not None and f.high is not None else ""
        typer.echo(f"{f.name:18} {f.kind:9} {f.unit or '':8} {rng:16} {f.loinc or '':8} {f.description}")


@app.command()
def queries(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the registered site queries: name@version, parameters and privacy properties."""
    import json

    from hemafed.study.queries import query_catalogue

    entries = query_catalogue()
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        typer.echo(f"{e['key']}")
        typer.echo(f"    {e['description']}")
        typer.echo(f"    parameters: {', '.join(e['parameters']) or 'none'}")
        typer.echo(f"    privacy: {e['privacy']}")


@app.command()
def samples(directory: Path = typer.Argument(..., help="folder to copy the sample files into")
            ) -> None:
    """Copy a sample hospital export, its mutation table, the mapping that imports them, a study."""
    from hemafed.atomic import write_text
    from hemafed.samples import FILES, HERE

    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        write_text(directory / name, (HERE / name).read_text(encoding="utf-8"))
        typer.echo(directory / name)


@app.command()
def demo(out: Path = typer.Option(Path("hemafed-demo"), "--out", help="output folder"),
         disease: str = typer.Option("MDS", "--disease", help="MDS, AML, MM or SCD"),
         patients: int = typer.Option(3000, "--patients", min=100, help="virtual patients"),
         sites: int = typer.Option(10, "--sites", min=2, help="virtual hospitals"),
         seed: int = typer.Option(7, "--seed"),
         real: Path | None = typer.Option(None, "--real", help="the real MDS IPSS-M cohort folder "
                                          "(e.g. ../shared/data/mds-ipssm-cohort)"),
         transport: str = typer.Option("sim", "--transport", help="sim, inprocess or deploy"),
         serve: bool = typer.Option(False, "--serve", help="then open the portal on the demo "
                                    "federation (http://127.0.0.1:8700)")
         ) -> None:
    """Run the demo study on a federation of virtual hospitals and write an HTML report."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from hemafed.demo import run_demo

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("starting", total=None)

        def progress(message: str) -> None:
            bar.update(task, description=message)

        outcome = run_demo(out, disease=disease, n_patients=patients, n_sites=sites,
                           seed=seed, real=real, transport=transport, progress=progress)
        bar.update(task, description="done")
    failed = [a["id"] for a in outcome.results["analyses"] if a.get("status") != "ok"]
    console.print(f"report: [bold]{outcome.report}[/bold] ({outcome.seconds:.0f} s)")
    console.print(f"site directories (audit logs, ledgers): {out / 'sites'}")
    if failed:
        console.print(f"[yellow]analyses that did not complete: {', '.join(failed)}[/yellow]")
    if serve:
        from hemafed.service.serve import serve_demo

        serve_demo(out, list(outcome.site_dirs.values()), (out / "study.yaml").read_text())


if __name__ == "__main__":  # pragma: no cover
    app()
