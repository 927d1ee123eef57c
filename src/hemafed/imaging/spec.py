"""The ``imaging`` section of a study spec: what sites extract and harmonise, declared publicly.

Example (YAML)::

    imaging:
      modality: MR
      settings: {bin_width: 8.0, aggregation: averaged}     # IBSI processing, see FeatureSettings
      features: {library: hemafed}                          # or mirp (hemafed[imaging-crosscheck])
      harmonise:
        features: [firstorder_mean, glcm_contrast]
        covariates: [age, hb]                               # biology ComBat preserves
      bounds:                                               # public ranges of every column used
        firstorder_mean: [0, 400]
        glcm_contrast: [0, 50]
        age: [0, 25]
        hb: [4, 14]

    analyses:
      - {id: infarct, kind: imaging, model: logistic, outcome: silent_infarct,
         covariates: [age, hb], top_k: 2}
      - {id: pfs, kind: imaging, model: cox, duration: relapse_time, event: relapse_status,
         covariates: [age, b2m], horizon: 2.0, top_k: 2}

The section is part of the spec the sites approve (its hash covers it), so the settings, the
feature library (``features.library``: ``hemafed``, the default, or ``mirp``) and the bounds
are fixed before any site computes anything. Every site computes its features with that
library and those settings (``hemafed site extract-features SITE --study S``); a site whose
stored features were computed otherwise refuses the study's requests (rule
``imaging.features``), and a request naming another library or settings is outside the plan
(rules ``library``, ``settings``). An ``imaging`` analysis harmonises the
features (federated ComBat), screens them (``candidates``, default all harmonised features)
and fits the model on its clinical ``covariates`` plus the ``top_k`` features of the screen
(:mod:`hemafed.imaging.study`). The harmonised copy ``h_<feature>`` has the bounds declared
for ``h_<feature>``, else those of ``<feature>`` (a harmonised value lies on its feature's
scale; a value outside is refused, never clipped). From this section alone a site derives the
imaging part of the study's plan (:func:`plan_parts`): the columns, their public bounds and every
covariate design the screen can lead to (each ``top_k`` subset of the candidates, in the
candidates' order).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hemafed.analytics.design import DesignSpec, NumericTerm, term
from hemafed.errors import InvalidInput
from hemafed.imaging.intake import SUPPORTED_MODALITIES
from hemafed.imaging.radiomics import FeatureSettings
from hemafed.imaging.radiomics.library import DEFAULT_LIBRARY, LIBRARIES

_KEYS = {"modality", "settings", "features", "harmonise", "bounds"}
_FEATURE_KEYS = {"library"}
HARMONISED_PREFIX = "h_"
"""Harmonised copies of features are stored as ``h_<feature>`` beside the raw ones."""
MODELS = ("logistic", "cox", "gbdt")
GBDT_DEFAULTS: dict[str, Any] = {"rounds": 20, "depth": 3, "bins": 16, "learning_rate": 0.1}
"""Boosting options of a ``model: gbdt`` imaging analysis (:mod:`hemafed.learn.gbdt`)."""
MAX_DESIGNS = 5_000
"""Most covariate designs one imaging analysis may imply (``C(candidates, top_k)``)."""


@dataclass(frozen=True)
class ImagingSpec:
    """A validated ``imaging`` section."""

    modality: str
    settings: FeatureSettings
    features: tuple[str, ...]
    covariates: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]
    library: str = DEFAULT_LIBRARY
    """The feature library every site computes with (``imaging.features.library``)."""

    @classmethod
    def from_mapping(cls, raw: Any) -> ImagingSpec:
        problems = imaging_problems(raw)
        if problems:
            raise InvalidInput("study spec imaging section: " + "; ".join(problems))
        h = raw.get("harmonise") or {}
        return cls(str(raw.get("modality", "MR")), FeatureSettings.from_dict(raw["settings"]),
                   tuple(h.get("features", ())), tuple(h.get("covariates", ())),
                   {k: (float(v[0]), float(v[1])) for k, v in (raw.get("bounds") or {}).items()},
                   str((raw.get("features") or {}).get("library", DEFAULT_LIBRARY)))

    def provenance(self) -> dict[str, Any]:
        """What a site's stored feature table must have been computed with."""
        return {"library": self.library, "settings": self.settings.to_dict()}


    def harmonised_bounds(self) -> dict[str, tuple[float, float]]:
        """Public bounds of every ``h_<feature>`` (declared, else the feature's own)."""
        return {HARMONISED_PREFIX + f: self.bounds.get(HARMONISED_PREFIX + f, self.bounds[f])
                for f in self.features}


def imaging_problems(raw: Any, analyses: Any = None) -> list[str]:
    """Every problem of an ``imaging`` section and of the spec's ``imaging`` analyses (empty
    when they are valid)."""
    if not isinstance(raw, Mapping):
        return ["imaging: expected a mapping"]
    out = [f"imaging: unknown key {k!r}" for k in sorted(set(raw) - _KEYS)]
    if str(raw.get("modality", "MR")) not in SUPPORTED_MODALITIES:
        out.append(f"imaging.modality must be one of {', '.join(SUPPORTED_MODALITIES)}")
    try:
        FeatureSettings.from_dict(dict(raw.get("settings") or {}))
    except (InvalidInput, TypeError) as exc:
        out.append(f"imaging.settings: {exc}")
    feats_section = raw.get("features") or {}
    if not isinstance(feats_section, Mapping):
        out.append("imaging.features must be a mapping, e.g. {library: hemafed}")
    else:
        out += [f"imaging.features: unknown key {k!r}"
                for k in sorted(set(feats_section) - _FEATURE_KEYS)]
        lib = feats_section.get("library", DEFAULT_LIBRARY)
        if lib not in LIBRARIES:
            out.append(f"imaging.features.library must be one of {', '.join(LIBRARIES)}, "
                       f"got {lib!r}")
    h = raw.get("harmonise") or {}
    bounds = raw.get("bounds") or {}
    if not isinstance(h, Mapping) or not isinstance(bounds, Mapping):
        return [*out, "imaging.harmonise and imaging.bounds must be mappings"]
    for col in [*h.get("features", []), *h.get("covariates", [])]:
        b = bounds.get(col)
        if not (isinstance(b, list) and len(b) == 2 and all(isinstance(v, int | float) for v in b)
                and b[0] < b[1]):
            out.append(f"imaging.bounds: column {col!r} needs [low, high] with low < high")
    features = [str(f) for f in h.get("features", [])]
    for i, a in enumerate(analyses if isinstance(analyses, list) else [], start=1):
        if isinstance(a, Mapping) and a.get("kind") == "imaging":
            out += [f"analyses[{i}] (imaging): {p}" for p in _analysis_problems(a, features)]
    return out


def _analysis_problems(a: Mapping[str, Any], features: Sequence[str]) -> list[str]:
    from hemafed.studyplan.spec import valid_columns

    model = a.get("model")
    if model not in MODELS:
        return [f"model must be one of {', '.join(MODELS)}, got {model!r}"]
    if model == "gbdt":
        needs: tuple[str, ...] = ("outcome",) if a.get("outcome") is not None \
            else ("duration", "event")
    else:
        needs = ("outcome",) if model == "logistic" else ("duration", "event")
    out = [f"a {model} model needs {k!r}" for k in needs if not isinstance(a.get(k), str)]
    if model == "gbdt":
        out += gbdt_problems(a)
    if len(features) < 2:
        out.append("imaging.harmonise.features must list at least 2 features")
    known = set(valid_columns())
    covs = a.get("covariates", [])
    if not isinstance(covs, list) or not all(isinstance(c, str) for c in covs):
        return [*out, "covariates must be a list of cohort columns"]
    out += [f"covariates: unknown column {c!r}" for c in covs if c not in known]
    cands = a.get("candidates", list(features))
    if not isinstance(cands, list) or not cands or any(c not in features for c in cands):
        return [*out, "candidates must list features of imaging.harmonise.features"]
    k = a.get("top_k", 2)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(cands):
        out.append(f"top_k must be an integer in [1, {len(cands)}], got {k!r}")
    elif math.comb(len(cands), k) > MAX_DESIGNS:
        out.append(f"top_k {k} of {len(cands)} candidates implies more than {MAX_DESIGNS} "
                   "designs; list fewer candidates")
    h = a.get("horizon")
    if h is not None and not (isinstance(h, int | float) and h > 0):
        out.append(f"horizon must be a positive time, got {h!r}")
    return out


EXACT_HISTOGRAMS_KEY = "exact_histograms"
"""The spec's opt-out of DP boosting histograms (the key :mod:`hemafed.study.plan` reads)."""


def _canon(value: Any) -> str:
    """The plan's canonical text of a parameter (sorted keys, compact)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def gbdt_problems(a: Mapping[str, Any]) -> list[str]:
    """The boosting options of a ``model: gbdt`` imaging analysis."""
    out = []
    for key, low, high in (("rounds", 1, 500), ("depth", 1, 6), ("bins", 2, 256)):
        v = a.get(key, GBDT_DEFAULTS[key])
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            out.append(f"{key} must be an integer in [{low}, {high}], got {v!r}")
    lr = a.get("learning_rate", GBDT_DEFAULTS["learning_rate"])
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not 0 < lr <= 1:
        out.append(f"learning_rate must be in (0, 1], got {lr!r}")
    nm = a.get("noise_multiplier")
    if a.get(EXACT_HISTOGRAMS_KEY) is not True and not (
            isinstance(nm, int | float) and not isinstance(nm, bool) and nm > 0):
        out.append(f"boosting histograms are differentially private unless the spec opts out: "
                   f"set noise_multiplier > 0 or {EXACT_HISTOGRAMS_KEY}: true")
    return out


def gbdt_options(a: Mapping[str, Any]) -> dict[str, Any]:
    """``rounds``, ``depth``, ``bins``, ``learning_rate`` of an analysis (defaults filled)."""
    return {k: a.get(k, v) for k, v in GBDT_DEFAULTS.items()}


@dataclass(frozen=True)
class PlanParts:
    """What a spec's imaging section adds to the study's plan (:mod:`hemafed.study.plan`)."""

    columns: frozenset[str]
    bounds: Mapping[str, tuple[float, float]]
    designs: tuple[list[dict[str, Any]], ...]
    analyses: int = 1
    features: frozenset[str] = field(default_factory=frozenset)
    edges: frozenset[str] = field(default_factory=frozenset)
    """Canonical fixed bin edges (``fixed_bins`` of each design) of ``model: gbdt`` analyses."""
    gbdt_caps: Mapping[str, int] = field(default_factory=dict)
    """Secure-sum caps of the boosting queries of ``model: gbdt`` analyses."""
    gbdt_exact: bool = True
    """False when a ``model: gbdt`` analysis has DP histograms: the plan then requires DP."""
    harmonise: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    """The spec's ``harmonise`` features and covariates, in order: every ComBat request of the
    study names exactly these (so the pooled parameters a site accepts are the study's)."""
    library: str = DEFAULT_LIBRARY
    """The feature library the study pins (``imaging.features.library``)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The IBSI settings the study pins (``imaging.settings``, canonical)."""


    @property
    def feature_bounds(self) -> dict[str, tuple[float, float]]:
        """Bounds of the imaging feature columns (the covariates keep their schema bounds in
        the other analyses; the imaging requests' own ``bounds`` are checked by
        :func:`plan_problem`)."""
        from hemafed.cohort.schema import FIELDS

        return {c: b for c, b in self.bounds.items() if c not in FIELDS}


def design(clinical: Sequence[str], features: Sequence[str],
           bounds: Mapping[str, Sequence[float]]) -> DesignSpec:
    """Clinical schema terms plus imaging features as numeric terms with public bounds: the
    design of an imaging model, derived from the spec alone (the plan lists every one the
    screen can lead to)."""
    terms = [term(c) for c in clinical]
    for f in features:
        if f not in bounds:
            raise InvalidInput(f"feature {f!r} has no declared bounds")
        terms.append(NumericTerm(f, float(bounds[f][0]), float(bounds[f][1])))
    return DesignSpec(tuple(terms))


def plan_parts(raw_spec: Mapping[str, Any]) -> PlanParts:
    """The imaging part of a study's plan, derived from the spec text alone."""
    ispec = ImagingSpec.from_mapping(raw_spec["imaging"])
    hbounds = ispec.harmonised_bounds()
    bounds = {**ispec.bounds, **hbounds}
    columns = {*ispec.features, *ispec.covariates, *hbounds}
    from hemafed.learn.features import fixed_bins

    designs = []
    edges: set[str] = set()
    caps: dict[str, int] = {}
    exact = True
    analyses = [a for a in raw_spec.get("analyses") or () if a.get("kind") == "imaging"]
    for a in analyses:
        columns.update(str(a[k]) for k in ("outcome", "duration", "event") if a.get(k))
        columns.update(a.get("covariates", []))
        cands = [HARMONISED_PREFIX + f for f in a.get("candidates", ispec.features)]
        boosted = a.get("model") == "gbdt"
        for chosen in itertools.combinations(cands, int(a.get("top_k", 2))):
            d = design(a.get("covariates", []), chosen, bounds)
            designs.append(d.to_params())
            if boosted:
                edges.add(_canon(fixed_bins(d, int(gbdt_options(a)["bins"])).to_params()))
        if boosted:
            o = gbdt_options(a)
            rounds, depth = int(o["rounds"]), int(o["depth"])
            exact = exact and a.get(EXACT_HISTOGRAMS_KEY) is True
            for q, n in (("gbdt_histograms", 2 * rounds * (depth + 1)),
                         ("gbdt_cox_risk_sets", 2 * (rounds + 1)),
                         ("gbdt_label_sums", 2 * (rounds + 1))):
                caps[q] = caps.get(q, 0) + n
    return PlanParts(frozenset(columns), bounds, tuple(designs), max(1, len(analyses)),
                     frozenset({*ispec.features, *ispec.covariates, *hbounds}),
                     frozenset(edges), caps, exact, (ispec.features, ispec.covariates),
                     ispec.library, ispec.settings.to_dict())


COMBAT_QUERIES = frozenset({"combat_moments", "combat_residuals", "combat_apply"})


def plan_problem(parts: PlanParts, params: Mapping[str, Any],
                 query: str | None = None) -> tuple[str, str] | None:
    """An imaging request's ``features``/``covariates`` must be planned columns and its
    ``bounds`` their public bounds (a hub cannot narrow a bound to probe a site's values); a
    ComBat request's are exactly the spec's ``harmonise`` lists, its ``bounds`` exactly theirs.
    A request that names a feature ``library`` or ``settings`` names the study's own."""
    if "library" in params and params["library"] != parts.library:
        return "library", (f"the study's feature library is {parts.library!r} "
                           "(imaging.features.library); a request may not name another")
    if "settings" in params:
        try:
            sent = FeatureSettings.from_dict(dict(params["settings"])).to_dict()
        except (InvalidInput, TypeError, ValueError):
            sent = None
        if sent != dict(parts.settings):
            return "settings", ("the feature settings are fixed by the spec's "
                                "imaging.settings; a request may not name others")
    for key in ("features", "covariates"):
        for col in params.get(key) or ():
            if col not in parts.features:
                return "column", f"column {col!r} is not named by the study's imaging section"
    if query in COMBAT_QUERIES:
        feats, covs = parts.harmonise
        for key, planned in (("features", feats), ("covariates", covs)):
            sent = params.get(key, [])
            if not isinstance(sent, list | tuple) or tuple(sent) != planned:
                return key, (f"ComBat {key} must be the spec's imaging.harmonise {key} "
                             f"{list(planned)}, in order")
        raw = params.get("bounds")
        # combat_apply may add the public bounds of h_<feature> (what the stored values obey)
        extra = {f"h_{f}" for f in feats} if query == "combat_apply" else set()
        if not isinstance(raw, Mapping) or not {*feats, *covs} <= set(raw) <= {*feats, *covs,
                                                                              *extra}:
            return "bounds", ("ComBat bounds must give exactly the harmonised features and "
                              "covariates their public bounds")
        if query == "combat_residuals":
            from hemafed.imaging.combat_params import residuals_problem

            # the hub's beta: finite, of the planned shape, a plausible covariate effect
            problem = residuals_problem(params)
            if problem is not None:
                return problem
        if query == "combat_apply":
            from hemafed.imaging.combat_params import pooled_problem

            # the pooled parameters a site stores with: finite, planned shapes, plausible
            # within the public bounds (a function of the approved study, not the hub's choice)
            problem = pooled_problem(params)
            if problem is not None:
                return problem
    raw = params.get("bounds")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        return "bounds", "bounds must map columns to their public [low, high]"
    for col, b in raw.items():
        want = parts.bounds.get(str(col))
        try:
            got = tuple(float(v) for v in b)
        except (TypeError, ValueError):
            got = None
        if want is None or got != want:
            return "bounds", (f"bounds of {col!r} must be the public {want}, got {b!r}; "
                              "bounds are fixed by the spec's imaging section")
    return None
