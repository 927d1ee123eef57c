"""Running a study for the hub service: the federation backend and live progress.

:class:`LocalFederation` runs a spec over site directories on this machine through the existing
runtime (secure aggregation, each site's own policy check, audit and ledger) with a transport
chosen by name: ``inprocess`` or ``sim`` (Flower simulation). :class:`DeployedFederation` runs it
through a running Flower deployment (SuperLink with TLS and SuperNode authentication, one SuperNode
and hemafed site worker per site) by the same code path as ``hemafed hub run STUDY.yaml``:
``submit_run`` of ``hemafed.study.hub:study_hub_main``, with one progress report per exchange. :func:`service_hub_main` is the hub step every transport
runs: ``study_hub_main`` plus a progress report after every secure sum, delivered to the
callback registered under the run's key when the hub step runs in this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hemafed.errors import InvalidInput
from hemafed.federation.api import AggregateResult, DPRequest, Federation, SumRequest, secure_sums
from hemafed.federation.runtime import SecureFederation
from hemafed.federation.transport import Exchange
from hemafed.secure import FederationManifest
from hemafed.site.runtime import MANIFEST_FILE
from hemafed.site.store import site_id_of
from hemafed.study import catalogue as _catalogue  # noqa: F401  (registers every site query)
from hemafed.study.runner import run_study
from hemafed.study.spec import StudySpec

Progress = Callable[[dict[str, Any]], None]
TRANSPORTS = ("inprocess", "sim")
DEPLOYED_HUB_MAIN = "hemafed.study.hub:study_hub_main"  # what `hemafed hub run` submits

_PROGRESS: dict[str, Progress] = {}
_PROGRESS_LOCK = threading.Lock()


class FederationBackend(Protocol):
    """Runs a spec over the network's sites and returns the results document."""

    @property
    def site_ids(self) -> tuple[str, ...]: ...

    def run(self, spec: StudySpec, progress: Progress | None = None,
            key: str = "") -> dict[str, Any]: ...


@dataclass
class ProgressFederation:
    """Wraps a federation: after every secure sum, report the round and the sites answering."""

    inner: Federation
    report: Progress
    spec: StudySpec
    rounds: int = 0
    analysis: str = ""
    started: float = field(default_factory=time.perf_counter)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.inner.site_ids

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        res = self.inner.secure_sum(query, params, study=study, dp=dp)
        self._progress(res)
        return res

    def secure_sums(self, parts: Sequence[SumRequest], *,
                    study: str = "default") -> list[AggregateResult]:
        """Several sums in one aggregation when the inner federation batches (one round)."""
        results = secure_sums(self.inner, parts, study=study)
        if results:
            self._progress(results[0])
        return results

    def _progress(self, res: AggregateResult) -> None:
        self.rounds += 1
        self.report({"round": self.rounds, "analysis": self.analysis,
                     "sites_answering": len(res.sites), "dropped": list(res.dropped),
                     "elapsed": round(time.perf_counter() - self.started, 1)})

    def on_analysis(self, title: str) -> None:
        index = [a.title for a in self.spec.analyses].index(title) + 1
        self.analysis = title
        self.report({"round": self.rounds, "analysis": title, "analysis_index": index,
                     "analyses": len(self.spec.analyses),
                     "elapsed": round(time.perf_counter() - self.started, 1)})


def service_hub_main(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
    """``study_hub_main`` with progress after each secure sum (see the module docstring)."""
    spec = StudySpec.from_mapping(config["spec"])
    manifest = FederationManifest.from_json(config["manifest"])
    secure = SecureFederation(exchange, manifest, site_ids=site_ids,
                              spec_sha256=spec.sha256, requester=spec.requester)
    with _PROGRESS_LOCK:
        report = _PROGRESS.get(str(config.get("progress_key", "")))
    if report is None:
        return run_study(spec, secure)
    fed = ProgressFederation(secure, report, spec)
    return run_study(spec, fed, progress=fed.on_analysis)


@dataclass(frozen=True)
class LocalFederation:
    """Site directories on this machine, run through the named transport."""

    site_dirs: Mapping[str, Path]
    manifest: FederationManifest
    transport: str = "inprocess"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise InvalidInput(f"transport {self.transport!r}: expected one of "
                               f"{', '.join(TRANSPORTS)}")

    @classmethod
    def from_dirs(cls, dirs: list[Path], transport: str = "inprocess") -> LocalFederation:
        if not dirs:
            raise InvalidInput("the hub needs the site directories it runs over (--site DIR)")
        manifest = FederationManifest.load(Path(dirs[0]) / MANIFEST_FILE)
        return cls({site_id_of(d): Path(d) for d in dirs}, manifest, transport)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self.site_dirs)

    def run(self, spec: StudySpec, progress: Progress | None = None,
            key: str = "") -> dict[str, Any]:
        config = {"spec": dict(spec.raw), "manifest": self.manifest.to_json(),
                  "progress_key": key}
        sites = [{"site_dir": str(d), "site_id": s} for s, d in self.site_dirs.items()]
        hub = "hemafed.service.runs:service_hub_main"
        handler = "hemafed.study.site_runtime:site_handler"
        if progress is not None:
            with _PROGRESS_LOCK:
                _PROGRESS[key] = progress
        try:
            if self.transport == "inprocess":
                from hemafed.federation.inprocess import run_in_process

                result = run_in_process(hub, handler, sites, config)
            else:
                from hemafed.federation.flower.simulation import run_in_simulation

                result = run_in_simulation(hub, handler, sites, config, timeout=600.0,
                                           connect_timeout=300.0)
        finally:
            with _PROGRESS_LOCK:
                _PROGRESS.pop(key, None)
        if not isinstance(result, dict):
            raise InvalidInput(f"the hub step returned {type(result).__name__}, expected a "
                               f"results document")
        return result


    def run_catalogue(self, plan_text: str, sites: list[str]) -> dict[str, Any]:
        """One catalogue refresh (:func:`hemafed.service.catalogue.catalogue_hub_main`) over
        ``sites`` (those that approved the plan), through the same transport."""
        from hemafed.service.catalogue import HUB_MAIN

        config = {"plan": plan_text, "sites": list(sites), "manifest": self.manifest.to_json()}
        members = [{"site_dir": str(self.site_dirs[s]), "site_id": s} for s in sites]
        handler = "hemafed.study.site_runtime:site_handler"
        if self.transport == "inprocess":
            from hemafed.federation.inprocess import run_in_process

            result = run_in_process(HUB_MAIN, handler, members, config)
        else:
            from hemafed.federation.flower.simulation import run_in_simulation

            result = run_in_simulation(HUB_MAIN, handler, members, config, timeout=600.0,
                                       connect_timeout=300.0)
        if not isinstance(result, dict):
            raise InvalidInput("the catalogue refresh returned no counts")
        return result


@dataclass(frozen=True)
class DeployedFederation:
    """A running SuperLink at ``address`` (TLS with ``ca_cert``) whose SuperNodes serve the
    manifest's sites. ``workdir`` holds the ``flwr`` connection and the run job folders."""

    address: str
    ca_cert: Path
    manifest: FederationManifest
    workdir: Path
    timeout: float = 120.0
    run_timeout: float = 3600.0
    transport: str = "deploy"

    @classmethod
    def connect(cls, address: str, ca_cert: Path, manifest: Path, workdir: Path,
                **kw: Any) -> DeployedFederation:
        if not Path(ca_cert).is_file():
            raise InvalidInput(f"--ca {ca_cert}: no such file (the SuperLink's CA certificate)")
        return cls(address, Path(ca_cert).resolve(), FederationManifest.load(Path(manifest)),
                   Path(workdir).resolve(), **kw)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self.manifest.sites)

    def run(self, spec: StudySpec, progress: Progress | None = None,
            key: str = "") -> dict[str, Any]:
        import uuid

        from hemafed.federation.flower.deployment import submit_run, write_connection

        home = self.workdir / "flwr-home"
        write_connection(home, self.address, self.ca_cert)
        job_dir = self.workdir / "jobs" / f"{key or 'run'}-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()

        def on_exchange(event: dict[str, Any]) -> None:
            if progress is not None:
                progress({"round": int(event.get("exchange", 0)) + 1,
                          "sites_answering": len(event.get("answered", [])),
                          "dropped": list(event.get("dropped", [])),
                          "elapsed": round(time.perf_counter() - started, 1)})
        body = submit_run(home, job_dir, DEPLOYED_HUB_MAIN,
                          {"spec": dict(spec.raw), "manifest": self.manifest.to_json()},
                          expected_sites=len(self.site_ids), timeout=self.timeout,
                          connect_timeout=self.timeout, run_timeout=self.run_timeout,
                          on_progress=on_exchange)
        result = body["result"]
        if not isinstance(result, dict):
            raise InvalidInput(f"the hub step returned {type(result).__name__}, expected a "
                               f"results document")
        return result

    def run_catalogue(self, plan_text: str, sites: list[str]) -> dict[str, Any]:
        """One catalogue refresh over the deployed SuperLink (the approving ``sites``)."""
        import uuid

        from hemafed.federation.flower.deployment import submit_run, write_connection
        from hemafed.service.catalogue import HUB_MAIN

        home = self.workdir / "flwr-home"
        write_connection(home, self.address, self.ca_cert)
        body = submit_run(home, self.workdir / "jobs" / f"catalogue-{uuid.uuid4().hex[:8]}",
                          HUB_MAIN, {"plan": plan_text, "sites": list(sites),
                                     "manifest": self.manifest.to_json()},
                          expected_sites=len(self.site_ids), timeout=self.timeout,
                          connect_timeout=self.timeout, run_timeout=self.run_timeout)
        result = body["result"]
        if not isinstance(result, dict):
            raise InvalidInput("the catalogue refresh returned no counts")
        return result
