"""Which site queries exist, and which ones a study needs: what a site officer puts in policy.yaml.

:func:`query_catalogue` imports the modules that register the site queries and describes each:
``name@version``, the parameters its code reads, and its privacy properties. :func:`needed_queries`
lists, for a study spec, the ``name@version`` of every query its analyses send, and
:func:`policy_block` prints them as an ``allowed_queries:`` block ready to paste.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hemafed.kinds import get_kind, registered_kinds
from hemafed.study import kinds as _registrations  # noqa: F401  (the kinds and their queries)
from hemafed.study.spec import StudySpec


class _KindSends(Mapping[str, tuple[str, ...]]):
    """kind -> the site queries its hub step sends, read from the registrations when asked."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        try:
            kind = get_kind(name)
        except KeyError:
            raise KeyError(name) from None
        if not kind.queries:
            raise KeyError(name)
        assert kind.sends is not None
        return kind.sends

    def __iter__(self) -> Iterator[str]:
        return iter([k.name for k in registered_kinds() if k.queries])

    def __len__(self) -> int:
        return sum(1 for k in registered_kinds() if k.queries)


QUERIES_OF_KIND: Mapping[str, tuple[str, ...]] = _KindSends()
"""Study analysis kind -> the site queries its estimator sends (:attr:`AnalysisKind.sends`
of its registration: the plan's permitted queries and this list live in one place)."""


def _registered() -> list[Any]:
    """Every site query (:mod:`hemafed.study.catalogue` registers them all)."""
    from hemafed.federation.queries import registered
    from hemafed.study import catalogue  # noqa: F401  (its import registers every site query)

    return registered()


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
                    "parameters": sorted(q.typed.keys()),
                    "privacy": "; ".join(privacy)})
    return out


def needed_queries(spec: StudySpec) -> list[str]:
    """``name@version`` of every site query the study's analyses send, sorted."""
    versions = {q.name: q.version for q in _registered()}
    names = {name for a in spec.analyses for name in QUERIES_OF_KIND.get(a.kind, ())}
    return sorted(f"{name}@{versions[name]}" for name in names if name in versions)


def policy_block(spec: StudySpec) -> str:
    """The ``allowed_queries:`` lines a site's policy.yaml needs for ``spec``."""
    lines = [f"# site queries study {spec.study_id!r} needs (paste into policy.yaml)",
             "allowed_queries:"]
    return "\n".join([*lines, *(f"  - {key}" for key in needed_queries(spec))])
