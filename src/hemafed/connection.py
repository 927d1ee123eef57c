"""A federation to fit on from Python or a notebook: ``hemafed.connect(...)``.

``connect`` opens the federation of an approved study over site directories on this machine
(a pilot, a training course, a hospital's own test network) and yields a
:class:`Connection`: the same :class:`~hemafed.federation.runtime.SecureFederation` every
transport uses, so each request goes through each site's policy check, the study's plan, the
site's audit log and ledger, and secure aggregation. The fitters take it as their federation::

    import hemafed
    from hemafed.analytics.cox import FederatedCoxPH as CoxPHFitter

    with hemafed.connect(["sites/a", "sites/b", "sites/c"], spec="study.yaml") as fed:
        cox = FederatedCoxPH().fit(fed, "os_time", "os_status", "age + hb")
    print(cox.summary)          # the fitted object is usable after the connection closed

Requests carry the spec's study id and hash, so the sites answer only what the approved study
implies. A deployed network is used through its hub service instead
(:class:`hemafed.service.Client` submits a spec and fetches its results); the hub code then
runs next to the SuperLink, never in the researcher's notebook.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hemafed.errors import InvalidInput
from hemafed.federation.api import AggregateResult, DPRequest
from hemafed.federation.inprocess import InProcessSites
from hemafed.federation.runtime import SecureFederation
from hemafed.secure import FederationManifest
from hemafed.site.runtime import MANIFEST_FILE
from hemafed.site.store import site_id_of
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

__all__ = ["Connection", "connect"]

_DEFAULT_STUDY = "default"


class Connection:
    """An open federation of one study (see :func:`connect`); a ``Federation`` for the fitters.

    A fitter's requests name ``study="default"`` unless told otherwise; here they name the
    connected study. ``round_trips`` counts the exchanges with the sites so far.
    """

    def __init__(self, sites: InProcessSites, federation: SecureFederation,
                 spec: StudySpec) -> None:
        self._sites = sites
        self._federation: SecureFederation | None = federation
        self.spec = spec

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self._open().site_ids

    @property
    def contributors(self) -> tuple[str, ...] | None:
        """The sites every sum so far covered (the same in every round), ``None`` before one."""
        return self._open().contributors

    @property
    def round_trips(self) -> int:
        return self._sites.count

    @property
    def closed(self) -> bool:
        return self._federation is None

    def _open(self) -> SecureFederation:
        if self._federation is None:
            raise InvalidInput("this connection is closed: open a new one with hemafed.connect()")
        return self._federation

    def secure_sum(self, query: str, params: Mapping[str, Any], *,
                   study: str = _DEFAULT_STUDY, dp: DPRequest | None = None) -> AggregateResult:
        if study not in (_DEFAULT_STUDY, self.spec.study_id):
            raise InvalidInput(f"this connection is to study {self.spec.study_id!r}; a request "
                               f"for study {study!r} needs its own connection")
        return self._open().secure_sum(query, params, study=self.spec.study_id, dp=dp)

    def close(self) -> None:
        self._federation = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._sites.site_ids)} sites"
        return f"<hemafed.Connection study={self.spec.study_id!r} {state}>"


def _spec(spec: str | Path | Mapping[str, Any] | StudySpec) -> StudySpec:
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, Mapping):
        return StudySpec.from_mapping(spec)
    return StudySpec.load(spec)


@contextmanager
def connect(sites: Sequence[str | Path], spec: str | Path | Mapping[str, Any] | StudySpec, *,
            noise_shares: str = "all") -> Iterator[Connection]:
    """Open the federation of the approved study ``spec`` over the site directories ``sites``.

    ``spec``: the study specification the sites approved (a YAML path, a mapping or a
    :class:`~hemafed.study.spec.StudySpec`); its hash goes with every request. The sites must
    share one federation manifest (``hemafed site join``). ``noise_shares`` as in
    :class:`~hemafed.federation.runtime.SecureFederation`.
    """
    if isinstance(sites, str | Path):
        raise InvalidInput("give a list of site directories, e.g. connect(['sites/a', 'sites/b'], "
                           "spec='study.yaml')")
    dirs = [Path(d) for d in sites]
    if not dirs:
        raise InvalidInput("connect() needs at least one site directory")
    study = _spec(spec)
    manifests = {}
    for d in dirs:
        if not (d / MANIFEST_FILE).is_file():
            raise InvalidInput(f"{d}: no federation manifest ({MANIFEST_FILE}); is it a site "
                               f"directory that joined a federation (hemafed site join)?")
        manifests[d] = FederationManifest.load(d / MANIFEST_FILE)
    fingerprints = {m.fingerprint for m in manifests.values()}
    if len(fingerprints) != 1:
        raise InvalidInput("the site directories are in different federations (their manifests "
                           "differ); connect to the sites of one federation")
    manifest = next(iter(manifests.values()))
    local = InProcessSites(site_handler, [{"site_dir": str(d), "site_id": site_id_of(d)}
                                          for d in dirs])
    federation = SecureFederation(local.exchange, manifest, site_ids=local.site_ids,
                                  spec_sha256=study.sha256, requester=study.requester,
                                  noise_shares=noise_shares)
    connection = Connection(local, federation, study)
    try:
        yield connection
    finally:
        connection.close()
