"""Which site queries exist, and which ones a study needs: what a site officer puts in policy.yaml.

:func:`query_catalogue` imports the modules that register the site queries and describes each:
``name@version``, the parameters its code reads, and its privacy properties. :func:`needed_queries`
lists, for a study spec, the ``name@version`` of every query its analyses send, and
:func:`policy_block` prints them as an ``allowed_queries:`` block ready to paste.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from hemafed.study.spec import StudySpec

# Modules whose import registers site queries (hemafed.federation.queries.register).
QUERY_MODULES = ("hemafed.federation.queries", "hemafed.analytics.describe",
                 "hemafed.analytics.survival_queries", "hemafed.analytics.km",
                 "hemafed.analytics.logrank", "hemafed.analytics.cox",
                 "hemafed.analytics.logistic", "hemafed.analytics.competing",
                 "hemafed.learn.features", "hemafed.learn.gbdt", "hemafed.learn.metrics",
                 "hemafed.synth.queries", "hemafed.analytics.finegray",
                 "hemafed.analytics.coxph_startstop", "hemafed.analytics.weighting_queries",
                 "hemafed.analytics.multistate", "hemafed.analytics.mixed",
                 "hemafed.genomics.queries")

# Study analysis kind -> the site queries its estimator sends (see hemafed.study.runner).
QUERIES_OF_KIND: dict[str, tuple[str, ...]] = {
    "describe": ("numeric_summary", "category_counts"),
    "crosstab": ("crosstab",),
    "km": ("time_histogram", "km_risk_table"),
    "logrank": ("time_histogram", "km_risk_table"),
    "cox": ("time_histogram", "cox_risk_set_sums", "cox_concordance_histogram"),
    "logistic": ("logistic_newton",),
    "competing": ("time_histogram", "competing_risk_table"),
    # with os_time/os_status among its columns, the real KM curve is drawn under the synthetic one
    "synth": ("marginal_counts", "time_histogram", "km_risk_table"),
    # boosting bins on the spec's fixed edges: no quantile sketch (learn_feature_histogram)
    "catalogue": ("catalogue_counts",),
    "gbdt": ("gbdt_cox_risk_sets", "gbdt_histograms", "km_risk_table",
             "learn_risk_histogram", "learn_eval_sums"),
}

_PARAM = re.compile(r"""params(?:\.get\(|\[)\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def _registered() -> list[Any]:
    for module in QUERY_MODULES:
        importlib.import_module(module)
    from hemafed.federation.queries import registered

    return registered()


def _parameters(*functions: Callable[..., Any]) -> list[str]:
    """Parameter names the query's own code reads (``params["x"]`` / ``params.get("x")``)."""
    names: set[str] = set()
    seen: set[Any] = set()
    todo = list(functions)
    while todo:
        fn = todo.pop()
        if fn in seen or not callable(fn):
            continue
        seen.add(fn)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        names.update(_PARAM.findall(source))
        module = inspect.getmodule(fn)
        for called in re.findall(r"\b(_[a-z][a-z0-9_]*)\(", source):  # one module's helpers
            helper = getattr(module, called, None)
            if inspect.isfunction(helper):
                todo.append(helper)
    names.discard("_site_id")
    return sorted(names)


def query_catalogue() -> list[dict[str, Any]]:
    """Every registered site query: key, description, parameters and privacy properties."""
    out = []
    for q in sorted(_registered(), key=lambda q: q.key):
        privacy = ["released only as a secure sum over the sites",
                   "output bounds declared from the parameters alone"]
        if q.site_aware:
            privacy.append("uses the answering site's own id (never sent back)")
        out.append({"key": q.key, "name": q.name, "version": q.version,
                    "description": q.description,
                    "parameters": _parameters(q.compute, q.declare, q.check_params),
                    "privacy": "; ".join(privacy)})
    return out


def needed_queries(spec: StudySpec) -> list[str]:
    """``name@version`` of every site query the study's analyses send, sorted."""
    versions = {q.name: q.version for q in _registered()}
    from hemafed.study.plan import KIND_QUERIES

    # kinds not listed here send what their plan permits (hemafed.study.plan)
    names = {name for a in spec.analyses
             for name in QUERIES_OF_KIND.get(a.kind, KIND_QUERIES.get(a.kind, ()))}
    return sorted(f"{name}@{versions[name]}" for name in names if name in versions)


def policy_block(spec: StudySpec) -> str:
    """The ``allowed_queries:`` lines a site's policy.yaml needs for ``spec``."""
    lines = [f"# site queries study {spec.study_id!r} needs (paste into policy.yaml)",
             "allowed_queries:"]
    return "\n".join([*lines, *(f"  - {key}" for key in needed_queries(spec))])
