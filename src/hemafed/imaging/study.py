"""The ``imaging`` analysis kind of ``hemafed study run``: harmonise, screen, fit.

One analysis (:mod:`hemafed.imaging.spec` describes the spec) runs, all as secure sums over one
fixed set of sites:

1. federated ComBat of the section's ``harmonise.features`` (two sums,
   :class:`~hemafed.imaging.combat.FederatedComBat`), then ``combat_apply``: the pooled
   parameters go back to every site, which stores its own harmonised ``h_<feature>``;
2. the univariate screen of the harmonised ``candidates`` (:mod:`hemafed.imaging.screen`);
3. the logistic (``outcome``) or Cox (``duration``, ``event``) model on the clinical
   ``covariates`` plus the ``top_k`` screened features (:mod:`hemafed.imaging.models`).

Every bound is the spec's; every request is one the sites' plan derives from the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.documents import frame_json
from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.imaging.combat import FederatedComBat
from hemafed.imaging.models import fit_boosted_model, fit_infarct_model, fit_pfs_model
from hemafed.imaging.spec import EXACT_HISTOGRAMS_KEY, HARMONISED_PREFIX, ImagingSpec, gbdt_options
from hemafed.learn.gbdt import FederatedGBDT

if TYPE_CHECKING:
    from hemafed.study.spec import Analysis, StudySpec


def run_imaging_analysis(fed: Federation, a: Analysis, spec: StudySpec) -> dict[str, Any]:
    """The results document of one ``imaging`` analysis (tables, stats) for the report."""
    if "imaging" not in spec.raw:
        raise InvalidInput("an imaging analysis needs the spec's imaging section")
    ispec = ImagingSpec.from_mapping(spec.raw["imaging"])
    study = spec.study_id
    combat = FederatedComBat().fit(fed, ispec.features, ispec.covariates, ispec.bounds,
                                   study=study, library=ispec.library)
    harmonised = combat.apply(fed, ispec.bounds, study=study)
    bounds = {**ispec.bounds, **ispec.harmonised_bounds()}
    candidates = [HARMONISED_PREFIX + f for f in a.get("candidates", ispec.features)]
    clinical = list(a.get("covariates", []))
    top_k = int(a.get("top_k", 2))
    stats: dict[str, Any] = {"patients harmonised": harmonised,
                             "harmonised features": len(ispec.features)}
    if a.get("model") == "gbdt":
        nm = a.get("noise_multiplier")
        if nm is None and a.get(EXACT_HISTOGRAMS_KEY) is not True:
            raise InvalidInput(f"analysis {a.id!r}: boosting histograms are differentially "
                               f"private unless the spec opts out: set noise_multiplier (DP) "
                               f"or {EXACT_HISTOGRAMS_KEY}: true")
        target = a.get("outcome") if a.get("outcome") is not None \
            else (a.get("duration"), a.get("event"))
        o = gbdt_options(a.options)
        fitted = fit_boosted_model(
            fed, target, clinical, candidates, bounds, top_k=top_k,
            horizon=float(a.get("horizon", 2.0)), rounds=int(o["rounds"]),
            depth=int(o["depth"]), bins=int(o["bins"]),
            learning_rate=float(o["learning_rate"]),
            dp=None if nm is None else DPRequest(noise_multiplier=float(nm)), study=study)
    elif a.get("model") == "logistic":
        fitted = fit_infarct_model(fed, a.get("outcome"), clinical, candidates, bounds,
                                   top_k=top_k, study=study)
    else:
        fitted = fit_pfs_model(fed, a.get("duration"), a.get("event"), clinical, candidates,
                               bounds, horizon=float(a.get("horizon", 2.0)), top_k=top_k,
                               study=study)
    m = fitted.model
    tables: dict[str, Any] = {}
    if isinstance(m, FederatedGBDT):
        stats |= {"boosting rounds": len(m.trees_), "secure sums": m.secure_sums_,
                  "histograms": "DP" if m.dp is not None else "exact secure sums",
                  "bins": int(gbdt_options(a.options)["bins"])}
        tables["feature_importance"] = frame_json(
            m.feature_importances_.rename("total gain").sort_values(ascending=False).to_frame())
    elif isinstance(m, FederatedLogisticRegression):
        stats |= {"newton_rounds": m.rounds, "n": m.n_, "pseudo_r2": m.prsquared}
    else:
        stats |= {"log_likelihood": m.log_likelihood_, "newton_rounds": m.rounds, "n": m.n_,
                  "events": m.events_, "excluded": m.excluded_}
    screen = fitted.screen.set_index("feature")
    screen["chosen"] = [f in fitted.features for f in screen.index]
    stats["features chosen"] = ", ".join(fitted.features)
    if not isinstance(m, FederatedGBDT):
        tables["summary"] = frame_json(m.summary)
    return {"tables": {**tables,
                       "screen": frame_json(screen),
                       "harmonisation": frame_json(pd.DataFrame(combat.summary))},
            "stats": stats}
