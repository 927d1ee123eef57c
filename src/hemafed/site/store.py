"""The site directory: where a hospital's node keeps its cohort, policy, ledger, audit log and keys.

Layout (made by :func:`init_site`)::

    site.yaml              site_id and layout version
    policy.yaml            the policy the hospital edits (see hemafed.site.policy)
    cohort/patients.parquet, cohort/mutations.parquet, cohort/panels.json
                           the pseudonymised canonical cohort
    audit.log (+ .head)    hash-chained audit log, HMAC'd with a key derived from the site secret
    ledger.jsonl           privacy ledger
    keys/site_secret       32 random bytes (hex) for pseudonyms and audit HMACs   (0600)
    keys/c4gh.sec, keys/c4gh.pub   Crypt4GH key pair of the vault               (0600 / 0644)
    keys/superexec.secret  32 random bytes shared by the site's SuperNode and site worker only
                           (Flower's ``--superexec-auth-secret-file``)              (0600)
    vault/                 Crypt4GH-encrypted raw genomic files

Imports read a file with :func:`hemafed.cohort.io.read_cohort`, replace patient identifiers by
keyed pseudonyms (one domain per study), refuse patients already present, and swap in the new
cohort directory only when everything is valid: an invalid file changes nothing in the site dir.

Pseudonyms differ between study domains, so importing the *same* patients under two studies adds
them twice; keep one study domain per site cohort unless the imported cohorts are disjoint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from hemafed import atomic
from hemafed.cohort.io import read_cohort
from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import CryptoError, HemafedError, InvalidInput, ValidationFailed
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.node import SiteNode
from hemafed.site.policy import _ID, ApprovedStudy, Budget, SitePolicy, write_default_policy
from hemafed.site.pseudonym import Pseudonymiser, derive_key
from hemafed.site.studies import (
    check_mapping_variables,
    load_plans,
    plans_summary,
    register_approved_variables,
    store_spec,
)
from hemafed.site.vault import Vault, generate_keypair, load_secret_key

if TYPE_CHECKING:  # the site stores a spec's text; it never builds one
    from hemafed.study.spec import StudySpec

log = logging.getLogger(__name__)

LAYOUT = "hemafed-site/1"
DEFAULT_STUDY = "default"


@dataclass(frozen=True)
class SitePaths:
    """Paths inside one site directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "site.yaml"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def patients(self) -> Path:
        return self.cohort / "patients.parquet"

    @property
    def mutations(self) -> Path:
        return self.cohort / "mutations.parquet"

    @property
    def panels(self) -> Path:
        return self.cohort / "panels.json"

    @property
    def audit(self) -> Path:
        return self.root / "audit.log"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def secret(self) -> Path:
        return self.keys / "site_secret"

    @property
    def superexec_secret(self) -> Path:
        return self.keys / "superexec.secret"

    @property
    def c4gh_sec(self) -> Path:
        return self.keys / "c4gh.sec"

    @property
    def c4gh_pub(self) -> Path:
        return self.keys / "c4gh.pub"

    @property
    def vault(self) -> Path:
        return self.root / "vault"

    @property
    def lock(self) -> Path:
        return self.root / ".site.lock"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def init_site(site_dir: str | Path, site_id: str, *,
              clock: Callable[[], dt.datetime] | None = None) -> SitePaths:
    """Create a new site directory (empty or absent) with keys, a policy template and no cohort."""
    paths = SitePaths(Path(site_dir))
    if not _ID.match(site_id):
        raise InvalidInput(f"site_id must be 1-128 letters, digits, '_.-', got {site_id!r}")
    if paths.config.exists():
        raise InvalidInput(f"{paths.root} is already a site (site.yaml exists); nothing changed")
    if paths.root.exists() and any(paths.root.iterdir()):
        raise InvalidInput(f"{paths.root} is not empty; initialise a site in a new or empty folder")
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.keys.mkdir(mode=0o700)
    paths.vault.mkdir(mode=0o700)
    paths.cohort.mkdir()
    atomic.write_text(paths.secret, os.urandom(32).hex() + "\n")
    os.chmod(paths.secret, 0o600)
    superexec_secret(paths.root)
    generate_keypair(paths.c4gh_sec, paths.c4gh_pub, comment=f"hemafed site {site_id}")
    write_default_policy(paths.policy, site_id)
    paths.lock.touch()
    created = (clock or _utc_now)().astimezone(dt.UTC).isoformat()
    # site.yaml last: its presence marks a complete site
    atomic.write_text(paths.config, yaml.safe_dump({"site_id": site_id, "layout": LAYOUT,
                                                    "created": created}, sort_keys=False))
    log.info("initialised site %s at %s", site_id, paths.root)
    return paths


def _site_paths(site_dir: str | Path) -> SitePaths:
    paths = SitePaths(Path(site_dir))
    if not paths.config.is_file():
        raise InvalidInput(f"{paths.root}: not a site directory (no site.yaml); "
                           f"run `hemafed site init {paths.root} --site-id ID`")
    return paths


def site_id_of(site_dir: str | Path) -> str:
    """The site id recorded in ``site.yaml``."""
    paths = _site_paths(site_dir)
    try:
        cfg = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{paths.config}: not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("site_id"), str):
        raise InvalidInput(f"{paths.config}: key 'site_id': expected a string")
    if cfg.get("layout") != LAYOUT:
        raise InvalidInput(f"{paths.config}: key 'layout': expected {LAYOUT!r}, got {cfg.get('layout')!r}")
    return str(cfg["site_id"])


def site_secret(site_dir: str | Path) -> bytes:
    """The site's secret (never leaves the site)."""
    path = _site_paths(site_dir).secret
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise CryptoError(f"{path}: cannot read the site secret ({exc})") from None
    if len(secret) < 16:
        raise CryptoError(f"{path}: the site secret is too short")
    return secret


def superexec_secret(site_dir: str | Path) -> Path:
    """The file holding the secret the site's SuperNode and site worker share, made if absent.

    Flower 1.42's SuperNode (``--isolation process``) hands ClientApp tasks from its local
    Runtime API only to a caller that signs ``AcquireTask`` with an HMAC keyed by this secret
    (``--superexec-auth-secret-file``), so another local process cannot take the site's tasks.
    It is created once (32 random bytes, mode 0600, atomically and never overwritten, so two
    processes starting at once agree on it), in a ``keys`` folder made if missing (mode 0700).
    A secret file other accounts could read is replaced by a new one. The path, never the
    bytes, goes on command lines."""
    paths = SitePaths(Path(site_dir))
    target = paths.superexec_secret
    try:
        if not paths.keys.is_dir():
            paths.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic.create_bytes(target, os.urandom(32))
        info = target.lstat()
    except OSError as exc:
        raise InvalidInput(f"{target}: cannot make or read the SuperExec auth secret "
                           f"({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        raise InvalidInput(f"{target} is not a non-empty regular file; remove it and serve "
                           "the site again to make a new SuperExec auth secret")
    if info.st_mode & 0o077:  # others may have read it: a new one, readable by the site only
        log.warning("%s was readable by other accounts; replaced by a new secret", target)
        atomic.write_bytes(target, os.urandom(32))
    return target


def load_policy(site_dir: str | Path) -> SitePolicy:
    """The site's policy; its site_id must match ``site.yaml``."""
    paths = _site_paths(site_dir)
    policy = SitePolicy.load(paths.policy)
    expected = site_id_of(site_dir)
    if policy.site_id != expected:
        raise InvalidInput(f"{paths.policy}: key 'site_id': expected {expected!r} (from site.yaml), "
                           f"got {policy.site_id!r}")
    return policy


def approve_study(site_dir: str | Path, spec: StudySpec, *, expires: dt.date, approved_by: str,
            budget: Budget | None = None) -> SitePolicy:
    """Approve ``spec`` at the site: store its text and pin its hash in the policy."""
    policy_path = Path(site_dir) / "policy.yaml"
    policy = load_policy(site_dir)
    study = ApprovedStudy(spec.study_id, spec.sha256, expires, approved_by, budget)
    others = tuple(s for s in policy.studies if s.study_id != spec.study_id)
    updated = replace(policy, studies=(*others, study))
    store_spec(site_dir, spec)
    updated.save(policy_path)
    return updated


def audit_log(site_dir: str | Path, *, clock: Callable[[], dt.datetime] | None = None) -> AuditLog:
    """The site's audit log, HMAC'd with a key derived from the site secret."""
    paths = _site_paths(site_dir)
    return AuditLog(paths.audit, key=derive_key(site_secret(site_dir), "audit"), clock=clock,
                    anchor_path=paths.keys / "audit.anchor")


def vault(site_dir: str | Path) -> Vault:
    """The site's Crypt4GH vault."""
    paths = _site_paths(site_dir)
    return Vault(paths.vault, paths.c4gh_sec, paths.c4gh_pub)


# --- the cohort ---------------------------------------------------------------------------

def _empty_cohort() -> Cohort:
    return validate_cohort(pd.DataFrame({"patient_id": pd.Series([], dtype="string"),
                                         "disease": pd.Series([], dtype="string")}))


def _recover_cohort_dir(paths: SitePaths) -> None:
    """Finish a cohort swap interrupted by a crash (the old directory is put back)."""
    if not paths.cohort.exists():
        olds = sorted(paths.root.glob(".cohort.old-*"))
        if olds:
            os.replace(olds[-1], paths.cohort)
            log.warning("%s: restored the cohort after an interrupted import", paths.root)


def _register_study_variables(site_dir: str | Path) -> dict[str, Any]:
    """Register the approved studies' declared variables (persisted in their stored specs), so
    a restarted node validates a cohort holding them; an unreadable policy registers nothing
    (``check_site`` reports it), conflicting declarations are a clear error."""
    if not _site_paths(site_dir).policy.exists():
        return {}
    try:
        policy = load_policy(site_dir)
    except InvalidInput as exc:
        log.warning("%s: no study variables registered: %s", site_dir, exc)
        return {}
    return dict(register_approved_variables(site_dir, policy))


def load_cohort(site_dir: str | Path) -> Cohort:
    """The site's cohort (empty before the first import); validated on load."""
    paths = _site_paths(site_dir)
    _recover_cohort_dir(paths)
    _register_study_variables(site_dir)  # the approved studies' variables are its columns
    if not paths.patients.exists():
        return _empty_cohort()
    try:
        patients = pd.read_parquet(paths.patients)
        mutations = pd.read_parquet(paths.mutations) if paths.mutations.exists() else None
        panels = json.loads(paths.panels.read_text(encoding="utf-8")) if paths.panels.exists() else {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{paths.cohort}: cannot read the stored cohort: {exc}") from exc
    return validate_cohort(patients, mutations, panels, source=str(paths.cohort))


def _merge(existing: Cohort, new: Cohort, source: str) -> Cohort:
    clash = sorted(set(existing.ids) & set(new.ids))
    if clash:
        raise InvalidInput(f"{source}: {len(clash)} patient(s) are already in the site cohort "
                           f"(same pseudonym in this study); nothing was imported")
    panels: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in existing.panels.items()}
    for name, genes in new.panels.items():
        if name in panels and set(panels[name]) != set(genes):
            raise InvalidInput(f"{source}: panel {name!r} lists different genes than the panel of "
                               f"that name already in the site; rename it. Nothing was imported")
        panels[name] = tuple(genes)
    if len(existing) == 0:
        return validate_cohort(new.patients, new.mutations, panels, source=source)
    patients = pd.concat([existing.patients, new.patients], ignore_index=True)
    frames = [m for m in (existing.mutations, new.mutations) if len(m)]
    mutations = pd.concat(frames, ignore_index=True) if frames else existing.mutations
    return validate_cohort(patients, mutations, panels, source=source)


@contextlib.contextmanager
def _site_lock(paths: SitePaths) -> Iterator[None]:
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_cohort(paths: SitePaths, cohort: Cohort) -> None:
    """Write the cohort into a new directory, then swap it in (never half a cohort)."""
    tmp = Path(tempfile.mkdtemp(prefix=".cohort.new-", dir=paths.root))
    try:
        for target, frame in ((tmp / "patients.parquet", cohort.patients),
                              (tmp / "mutations.parquet", cohort.mutations)):
            with open(target, "wb") as fh:
                frame.to_parquet(fh, index=False)
                fh.flush()
                os.fsync(fh.fileno())
        atomic.write_text(tmp / "panels.json", json.dumps(
            {k: list(v) for k, v in sorted(cohort.panels.items())}, indent=1) + "\n")
        old = paths.root / f".cohort.old-{os.getpid()}"
        if paths.cohort.exists():
            os.replace(paths.cohort, old)
        os.replace(tmp, paths.cohort)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class ImportReport:
    """What an import added (counts only, never patient data)."""

    source: str
    study: str
    patients_added: int
    mutations_added: int
    patients_total: int
    summary: Mapping[str, object] = field(default_factory=dict)


def import_into_site(site_dir: str | Path, file: str | Path, fmt: str | None = None, *,
                     mutations: str | Path | None = None,
                     mapping: str | Path | Mapping[str, Any] | None = None,
                     panels: str | Path | Mapping[str, Iterable[str]] | None = None,
                     study: str = DEFAULT_STUDY, requester: str = "site-operator",
                     clock: Callable[[], dt.datetime] | None = None) -> ImportReport:
    """Import a cohort file into the site, pseudonymised in ``study``'s domain.

    Raises ``InvalidInput``/``ValidationFailed`` (listing every problem) and changes nothing
    when the file, its mutations or the merge are invalid. A successful import is audited.
    """
    paths = _site_paths(site_dir)
    if not _ID.match(study):
        raise InvalidInput(f"study must be 1-128 letters, digits, '_.-', got {study!r}")
    # the approved studies' variables first (the export may fill them), then the mapping's own
    approved = _register_study_variables(site_dir)
    mapping = check_mapping_variables(mapping, approved)
    try:
        cohort = read_cohort(file, fmt, mutations=mutations, panels=panels, mapping=mapping)
    except HemafedError:
        raise
    except (RecursionError, UnicodeError, ValueError, OverflowError, TypeError, KeyError,
            IndexError, AttributeError, MemoryError) as exc:
        # a malformed file the reader did not foresee (deeply nested JSON, a 5,000-digit
        # number, bytes that are not UTF-8 ...): one clear error, nothing is changed
        raise InvalidInput(f"{file}: cannot be read as a cohort file ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); check its format and encoding (UTF-8), "
                           f"nothing was imported") from exc
    secret = site_secret(site_dir)
    pseudonymised = Pseudonymiser(secret).apply(cohort, study)
    with _site_lock(paths):
        existing = load_cohort(site_dir)
        merged = _merge(existing, pseudonymised, str(file))
        _write_cohort(paths, merged)
    report = ImportReport(str(file), study, len(pseudonymised), len(pseudonymised.mutations),
                          len(merged), pseudonymised.summary())
    audit_log(site_dir, clock=clock).append(
        requester=requester, study=study, query="site.import@1",
        params={"file": Path(file).name, "format": fmt or "auto",
                "patients_added": report.patients_added,
                "mutations_added": report.mutations_added},
        allowed=True, reason=f"imported {report.patients_added} patient(s) into the site cohort")
    return report


# --- checks and the node ------------------------------------------------------------------

@dataclass(frozen=True)
class SiteCheck:
    """Result of :func:`check_site`: ``problems`` is empty when everything is in order."""

    site_id: str | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok


def _private(path: Path) -> bool:
    return path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def check_site(site_dir: str | Path) -> SiteCheck:
    """Validate the site directory: config, policy, keys, cohort, audit chain and ledger."""
    root = Path(site_dir)
    problems: list[str] = []
    notes: list[str] = []
    try:
        site_id: str | None = site_id_of(root)
    except InvalidInput as exc:
        return SiteCheck(None, (str(exc),))
    paths = SitePaths(root)
    policy: SitePolicy | None = None
    try:
        policy = load_policy(root)
        notes.append(f"policy: {len(policy.allowed_queries)} allowed queries, "
                     f"{len(policy.studies)} approved studies")
    except InvalidInput as exc:
        problems.append(str(exc))
    for key in (paths.secret, paths.c4gh_sec):
        if not key.exists():
            problems.append(f"{key}: missing")
        elif not _private(key):
            problems.append(f"{key}: readable by others; run chmod 600 {key}")
    try:
        load_secret_key(paths.c4gh_sec)
    except CryptoError as exc:
        problems.append(str(exc))
    if not paths.c4gh_pub.exists():
        problems.append(f"{paths.c4gh_pub}: missing")
    try:
        cohort = load_cohort(root)
        notes.append(f"cohort: {len(cohort)} patients, {len(cohort.mutations)} mutations")
    except ValidationFailed as exc:
        problems.append(str(exc))
    except InvalidInput as exc:
        problems.append(str(exc))
    try:
        report = audit_log(root).verify()
        if report.ok:
            notes.append(str(report))
        else:
            problems.append(f"{paths.audit}: {report}")
    except CryptoError as exc:
        problems.append(str(exc))
    if policy is not None:
        try:
            ledger = PrivacyLedger.from_policy(paths.ledger, policy)
            notes.append(f"ledger: {len(ledger.charges())} releases charged")
            from hemafed.site.rollback import ledger_audit_problems

            problems.extend(ledger_audit_problems(audit_log(root), ledger))

            plans = load_plans(root, policy)
            notes.extend(plans_summary(plans))
            problems.extend(f"study {sid}: the stored specification does not match the "
                            f"approved hash" for sid, p in sorted(plans.items()) if p is None)
        except InvalidInput as exc:
            problems.append(str(exc))
    return SiteCheck(site_id, tuple(problems), tuple(notes))


def open_node(site_dir: str | Path, *, clock: Callable[[], dt.datetime] | None = None,
              rng: np.random.Generator | None = None) -> SiteNode:
    """A :class:`SiteNode` over a site directory."""
    paths = _site_paths(site_dir)
    from hemafed.site.participants import ReleaseRegister

    policy = load_policy(site_dir)
    ledger = PrivacyLedger.from_policy(paths.ledger, policy, clock=clock)
    return SiteNode(load_cohort(site_dir), policy, ledger, audit_log(site_dir, clock=clock),
                    clock=clock, rng=rng, plans=load_plans(site_dir, policy),
                    releases=ReleaseRegister(paths.root / "released.json"))
