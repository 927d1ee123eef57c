"""Study specifications: the analyses, columns and privacy settings a researcher asks sites to run.

A spec is a YAML file. Its SHA-256 (over canonical JSON of the parsed spec, so formatting and
comments do not change it) is what every site approves in its policy: a changed analysis is a
different study.

>>> spec = StudySpec.from_mapping({"study_id": "s1", "analyses": [
...     {"id": "size", "kind": "describe", "columns": ["age"]}]})
>>> len(spec.sha256)
64
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hemafed.errors import InvalidInput

KINDS: dict[str, tuple[set[str], set[str]]] = {
    # kind -> (required keys, optional keys) besides id/kind/title
    "describe": ({"columns"}, {"bounds", "levels", "bins"}),
    "crosstab": ({"row", "col"}, {"levels"}),
    "km": ({"duration", "event"}, {"group", "levels"}),
    "logrank": ({"duration", "event", "group", "levels"}, set()),
    "cox": ({"duration", "event", "formula"}, {"ties", "strata", "strata_levels", "bounds"}),
    "logistic": ({"outcome", "formula"}, {"positive", "bounds"}),
    "competing": ({"causes"}, {"group", "levels", "event_of_interest", "cause_names"}),
    "synth": ({"columns"}, {"epsilon", "delta", "n", "seed", "iters", "anchor", "time_edges"}),
    "gbdt": ({"duration", "event", "features"}, {"rounds", "depth", "learning_rate"}),
    "iptw": ({"treatment", "formula"}, {"duration", "event", "ties", "stabilized", "max_weight"}),
    "multistate": (set(), {"illness_time", "illness_status", "exit_time", "exit_status", "states"}),
    "lmm": ({"outcome", "bounds"}, {"time", "covariates", "max_obs"}),
    "gwas": ({"trait", "variant_list"}, {"threshold", "covariates", "n_pcs", "genotypes",
                                          "min_mac", "epsilon", "top", "test"}),
    "finegray": ({"causes", "formula"}, {"cause", "cause_names", "bounds"}),
    "cox_tv": ({"duration", "event", "formula", "switch"}, {"ties", "bounds"}),
}

_TOP_REQUIRED = {"study_id", "analyses"}
_TOP_OPTIONAL = {"title", "disease", "requester", "min_cell", "epsilon", "delta", "description",
                 "imaging"}


@dataclass(frozen=True)
class Analysis:
    """One analysis of a study: ``kind`` names the estimator, ``options`` its parameters."""

    id: str
    kind: str
    title: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class StudySpec:
    """A validated study specification."""

    study_id: str
    analyses: tuple[Analysis, ...]
    title: str = ""
    disease: str | None = None
    requester: str = "researcher"
    min_cell: int = 5
    epsilon: float | None = None
    delta: float = 1e-6
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the spec: what sites approve."""
        canon = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read the study spec: {exc}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_mapping(raw, source=str(path))

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "study spec") -> StudySpec:
        """Validate a parsed spec; every problem is reported at once."""
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{source}: expected a mapping at the top level")
        raw = json.loads(json.dumps(raw, default=str))  # plain JSON values only (dates -> str)
        problems: list[str] = []
        missing = _TOP_REQUIRED - set(raw)
        unknown = set(raw) - _TOP_REQUIRED - _TOP_OPTIONAL
        problems += [f"missing key {k!r}" for k in sorted(missing)]
        problems += [f"unknown key {k!r}" for k in sorted(unknown)]
        if "imaging" in raw:  # the imaging section (hemafed.imaging.spec) checks itself
            from hemafed.imaging.spec import imaging_problems

            problems += imaging_problems(raw["imaging"])
        study_id = raw.get("study_id")
        if not isinstance(study_id, str) or not study_id.strip():
            problems.append("study_id must be a non-empty string")
        min_cell = raw.get("min_cell", 5)
        if not isinstance(min_cell, int) or min_cell < 1:
            problems.append(f"min_cell must be an integer >= 1, got {min_cell!r}")
        analyses: list[Analysis] = []
        items = raw.get("analyses", [])
        if not isinstance(items, list) or not items:
            problems.append("analyses must be a non-empty list")
            items = []
        seen: set[str] = set()
        for i, item in enumerate(items, start=1):
            where = f"analyses[{i}]"
            if not isinstance(item, Mapping):
                problems.append(f"{where}: expected a mapping")
                continue
            kind, aid = item.get("kind"), item.get("id", f"a{i}")
            if kind not in KINDS:
                problems.append(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
                continue
            if not isinstance(aid, str) or aid in seen:
                problems.append(f"{where}: id must be a unique string, got {aid!r}")
            seen.add(str(aid))
            required, optional = KINDS[kind]
            opts = {k: v for k, v in item.items() if k not in ("id", "kind", "title")}
            problems += [f"{where} ({kind}): missing {k!r}" for k in sorted(required - set(opts))]
            problems += [f"{where} ({kind}): unknown option {k!r}"
                         for k in sorted(set(opts) - required - optional)]
            analyses.append(Analysis(str(aid), str(kind), str(item.get("title", aid)), opts))
        eps = raw.get("epsilon")
        if eps is not None and (not isinstance(eps, int | float) or eps <= 0):
            problems.append(f"epsilon must be > 0, got {eps!r}")
        if problems:
            raise InvalidInput(f"{source}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
        return cls(study_id=str(study_id), analyses=tuple(analyses), title=str(raw.get("title", "")),
                   disease=raw.get("disease"), requester=str(raw.get("requester", "researcher")),
                   min_cell=int(min_cell), epsilon=None if eps is None else float(eps),
                   delta=float(raw.get("delta", 1e-6)), raw=raw)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dict(self.raw), sort_keys=False)
