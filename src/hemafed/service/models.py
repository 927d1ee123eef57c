"""The hub service's database tables (SQLAlchemy 2 declarative models).

One row per account, browser session, API token, failed login, site, study (with every submitted
version of its spec kept), per-site approval (with the site's signature), run, result, model
version. The schema is created by the Alembic migrations in ``hemafed/service/migrations``; these
classes are the Python view of the same tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("researcher", "officer", "admin")
RUN_STATES = ("queued", "running", "succeeded", "failed", "interrupted")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("sites.site_id"))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class BrowserSession(Base):
    __tablename__ = "sessions"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    expires: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    user: Mapped[User] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    user: Mapped[User] = relationship()


class LoginFailure(Base):
    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Site(Base):
    __tablename__ = "sites"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    identity_key: Mapped[str] = mapped_column(String(64))  # base64 Ed25519 public key
    node_key: Mapped[str | None] = mapped_column(Text)  # Flower SuperNode public key (PEM)
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    audit_seq: Mapped[int | None] = mapped_column(Integer)
    audit_hash: Mapped[str | None] = mapped_column(String(64))
    audit_ok: Mapped[bool | None] = mapped_column()
    # the site's public description (disease areas, fields: names only, no counts)
    description: Mapped[dict[str, Any] | None] = mapped_column()
    description_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(String(128), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(300))
    spec_yaml: Mapped[str] = mapped_column(Text)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    owner: Mapped[User] = relationship()


class StudyVersion(Base):
    """Every spec ever submitted for a study (amendments never overwrite history)."""

    __tablename__ = "study_versions"
    __table_args__ = (UniqueConstraint("study_pk", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    version: Mapped[int] = mapped_column(Integer)
    spec_yaml: Mapped[str] = mapped_column(Text)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Approval(Base):
    """A site's signed decision on one spec hash of a study."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("study_pk", "site_id", "spec_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approved | refused
    reason: Mapped[str] = mapped_column(Text, default="")
    officer: Mapped[str] = mapped_column(String(200))
    signed_payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(200))
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    contributors: Mapped[list[Any]] = mapped_column(default=list)
    dropouts: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    started: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    study: Mapped[Study] = relationship()


class Result(Base):
    __tablename__ = "results"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column()
    report_html: Mapped[str] = mapped_column(Text)


class ModelVersion(Base):
    """Registry: a fitted model by name and version, with its lineage (spec hash -> run)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


__all__ = [
    "ROLES",
    "RUN_STATES",
    "ApiToken",
    "Approval",
    "Base",
    "BrowserSession",
    "CatalogueSchedule",
    "LoginFailure",
    "ModelVersion",
    "Result",
    "Run",
    "Site",
    "Study",
    "StudyVersion",
    "User",
]


class CataloguePlanRow(Base):
    """The network's standing catalogue plan (the latest row is the current one)."""

    __tablename__ = "catalogue_plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec_yaml: Mapped[str] = mapped_column(Text)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CatalogueApproval(Base):
    """A site's signed approval of one catalogue plan hash."""

    __tablename__ = "catalogue_approvals"
    __table_args__ = (UniqueConstraint("site_id", "spec_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    officer: Mapped[str] = mapped_column(String(64))
    signed_payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CatalogueRelease(Base):
    """Released catalogue counts of one refresh: rounded, suppressed, DP (``site_id`` NULL:
    the network totals). Nothing unrounded is stored."""

    __tablename__ = "catalogue_releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    refresh: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[str | None] = mapped_column(String(64))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    counts: Mapped[dict[str, Any]] = mapped_column()
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CatalogueSchedule(Base):
    """The catalogue's refresh schedule (one row, id 1, for the current plan): the next due
    time, the hub process holding a refresh in flight, and the last attempt's outcome."""

    __tablename__ = "catalogue_schedule"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    next_due: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_trigger: Mapped[str | None] = mapped_column(String(16))
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_reason: Mapped[str | None] = mapped_column(Text)
