"""``hemafed site ...``: the commands a hospital's data manager runs on its site directory.

Mounted by the main command as ``app.add_typer(site_cli.app, name="site")``. Exit code 1 means a
check failed or input was refused; the reason is printed on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from hemafed.errors import HemafedError
from hemafed.site import store
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.store import SitePaths

app = typer.Typer(help="Run a hospital's site node: init, import, check, audit, budget, vault.",
                  no_args_is_help=True, add_completion=False)
vault_app = typer.Typer(help="Crypt4GH-encrypted raw genomic files.", no_args_is_help=True,
                        add_completion=False)
app.add_typer(vault_app, name="vault")

T = TypeVar("T")
SiteDir = Annotated[Path, typer.Argument(help="the site directory")]
VaultName = Annotated[str, typer.Argument(help="name in the vault")]


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; a hemafed error becomes its message on stderr and exit code 1."""
    try:
        return action()
    except HemafedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("init")
def init(site_dir: Annotated[Path, typer.Argument(help="new or empty folder for the site")],
         site_id: Annotated[str, typer.Option("--site-id", help="this site's id, e.g. hosp-paris")],
         ) -> None:
    """Create a site directory: keys, a policy template to edit, an empty cohort."""
    paths = _run(lambda: store.init_site(site_dir, site_id))
    typer.echo(f"site {site_id} initialised at {paths.root}")
    typer.echo(f"next: edit {paths.policy} (approved studies: `hemafed study validate SPEC` "
               "prints what to add), then `hemafed site import`; the audit log and the privacy "
               "ledger are created with the first import or request")


@app.command("import")
def import_(site_dir: SiteDir,
            file: Annotated[Path, typer.Argument(help="cohort file to import")],
            fmt: Annotated[str | None, typer.Option(
                "--format", help="file format (default: from the name)")] = None,
            mutations: Annotated[Path | None, typer.Option(
                "--mutations", help="long mutation table")] = None,
            mapping: Annotated[Path | None, typer.Option(
                "--mapping", help="column mapping YAML (site columns -> canonical)")] = None,
            panels: Annotated[Path | None, typer.Option(
                "--panels", help="YAML or JSON file: panel -> genes")] = None,
            study: Annotated[str, typer.Option(
                "--study", help="pseudonym domain (one per study)")] = store.DEFAULT_STUDY,
            ) -> None:
    """Validate, pseudonymise and add a cohort file to the site (all or nothing)."""
    report = _run(lambda: store.import_into_site(site_dir, file, fmt, mutations=mutations,
                                                 mapping=mapping, panels=panels, study=study))
    typer.echo(f"imported {report.patients_added} patients and {report.mutations_added} mutations "
               f"(study domain {report.study}); the site now holds {report.patients_total} patients")
    typer.echo(json.dumps(report.summary, indent=2, default=str))


@app.command("approve")
def approve(site_dir: SiteDir,
            spec: Annotated[Path, typer.Argument(help="the study specification YAML approved")],
            expires: Annotated[str, typer.Option("--expires", help="last valid day, YYYY-MM-DD")],
            approved_by: Annotated[str, typer.Option(
                "--approved-by", help="who approved it, e.g. the ethics decision")],
            ) -> None:
    """Approve a study: store its specification at the site (the plan every request of the
    study is checked against) and pin its SHA-256 in the policy."""
    import datetime as dt

    from hemafed.errors import InvalidInput
    from hemafed.site.store import approve_study
    from hemafed.studyplan.plans import ApprovedPlan, plan_of
    from hemafed.studyplan.spec import StudySpec

    def run() -> tuple[StudySpec, ApprovedPlan]:
        try:
            day = dt.date.fromisoformat(expires)
        except ValueError:
            raise InvalidInput(f"--expires must be a date YYYY-MM-DD, got {expires!r}") from None
        parsed = StudySpec.load(spec)
        plan = plan_of(parsed, str(spec))  # a spec the site cannot plan is not approved
        approve_study(site_dir, parsed, expires=day, approved_by=approved_by)
        return parsed, plan

    parsed, plan = _run(run)
    typer.echo(f"approved study {parsed.study_id!r} (spec sha256 {parsed.sha256}) until {expires}")
    typer.echo(f"plan: queries {', '.join(sorted(plan.queries))}")
    typer.echo(f"plan: columns {', '.join(sorted(plan.columns))}")


@app.command("check")
def check(site_dir: SiteDir) -> None:
    """Validate the site: config, policy, key permissions, cohort, audit chain, ledger."""
    report = store.check_site(site_dir)
    for note in report.notes:
        typer.echo(note)
    warnings = _approval_warnings(site_dir)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not report.ok:
        for problem in report.problems:
            typer.echo(f"problem: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"site {report.site_id}: OK" + (f" ({len(warnings)} warning(s) above)"
                                                 if warnings else ""))


def _approval_warnings(site_dir: Path, soon_days: int = 30) -> list[str]:
    """Study approvals that have expired or expire within ``soon_days``."""
    import datetime as dt

    try:
        policy = store.load_policy(site_dir)
    except HemafedError:
        return []  # check_site reports the policy problem itself
    today, out = dt.date.today(), []
    for s in policy.studies:
        days = (s.expires - today).days
        if days < 0:
            out.append(f"the approval of study {s.study_id!r} expired on {s.expires}; its "
                       "requests are refused: renew it in policy.yaml or remove it")
        elif days <= soon_days:
            out.append(f"the approval of study {s.study_id!r} expires in {days} day(s), on "
                       f"{s.expires}: renew it in policy.yaml before then")
    return out


@app.command("audit")
def audit(site_dir: SiteDir,
          verify: Annotated[bool, typer.Option(
              "--verify", help="verify the hash chain and HMACs")] = False,
          last: Annotated[int, typer.Option("--last", help="show the last N entries")] = 10,
          ) -> None:
    """Show the audit log; with --verify, check it was not edited, cut or reordered."""
    log = _run(lambda: store.audit_log(site_dir))
    if verify:
        report = _run(log.verify)
        if not report.ok:
            typer.echo(str(report), err=True)
            raise typer.Exit(1)
        typer.echo(str(report))
        return
    for entry in log.entries()[-last:] if last > 0 else []:
        typer.echo(f"{entry['seq']:>6} {entry['time']} {entry['decision']:8} {entry['study']:12} "
                   f"{entry['query']:24} {entry['requester']}: {entry['reason']}")


@app.command("budget")
def budget(site_dir: SiteDir) -> None:
    """Show the privacy budget spent per study and in total (composed, at each budget's delta)."""

    def spending() -> list[str]:
        policy = store.load_policy(site_dir)
        ledger = PrivacyLedger.from_policy(SitePaths(site_dir).ledger, policy)
        studies = sorted({c.study for c in ledger.charges()} | {s.study_id for s in policy.studies})
        rows = [ledger.spent_total(), *(ledger.spent(s) for s in studies)]
        return [f"{r.scope:24} releases {r.releases:>4}  epsilon {r.epsilon:8.4f} of "
                f"{r.budget.epsilon:g} (delta {r.budget.delta:g}), remaining {r.remaining:.4f}"
                for r in rows]

    for line in _run(spending):
        typer.echo(line)


@vault_app.command("add")
def vault_add(site_dir: SiteDir,
              file: Annotated[Path, typer.Argument(help="raw file to encrypt into the vault")],
              name: Annotated[str | None, typer.Option("--name", help="name in the vault")] = None,
              ) -> None:
    """Encrypt a raw genomic file into the vault (Crypt4GH)."""
    stored = _run(lambda: store.vault(site_dir).add(file, name))
    typer.echo(f"stored {stored!r} encrypted in the vault")


@vault_app.command("get")
def vault_get(site_dir: SiteDir, name: VaultName,
              out: Annotated[Path, typer.Argument(help="where to write the decrypted file")],
              ) -> None:
    """Decrypt a vault file (stays at the site)."""
    _run(lambda: store.vault(site_dir).get(name, out))
    typer.echo(f"decrypted {name!r} to {out}")


@vault_app.command("reencrypt")
def vault_reencrypt(site_dir: SiteDir, name: VaultName,
                    recipient: Annotated[Path, typer.Option(
                        "--recipient", help="recipient's Crypt4GH public key")],
                    out: Annotated[Path, typer.Option(
                        "--out", help="file to write for the recipient")],
                    ) -> None:
    """Re-encrypt a vault file's header for an authorised recipient (data blocks unchanged)."""
    _run(lambda: store.vault(site_dir).reencrypt(name, recipient, out))
    typer.echo(f"wrote {out}: readable only with the recipient's secret key")


@vault_app.command("list")
def vault_list(site_dir: SiteDir) -> None:
    """List the files in the vault."""
    for name in _run(lambda: store.vault(site_dir).names()):
        typer.echo(name)
