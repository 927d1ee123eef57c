"""The fixed vocabulary of a site's refusal: what a hub may learn when a site says no.

A site's reply to a request is either its masked input or a :class:`Refusal`: one ``code`` from a
small fixed set, one ``name`` (a policy rule, a plan element, or a parameter name the hub itself
sent) and an opaque ``audit_ref`` (random, so it says nothing about the data) that points to the
site's audit entry, where the full detail lives. Nothing computed from patient data, no count,
value or data-dependent wording is in a refusal: the hub reads the code and name only, and the
text it shows is written from them at the hub (:meth:`Refusal.text`).

>>> r = Refusal("invalid_parameter", "epsilon", "0123456789abcdef")
>>> Refusal.from_wire(r.to_wire()) == r
True
>>> r.text("A")
"site 'A' refused: parameter 'epsilon' is invalid (site audit reference 0123456789abcdef)"
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from hemafed.errors import BudgetExhausted, HemafedError, InvalidInput, PolicyRefused

CODES: dict[str, str] = {
    "policy": "the site policy refused it (rule {name!r})",
    "invalid_parameter": "parameter {name!r} is invalid",
    "outside_plan": "the request is outside the approved study plan ({name!r})",
    "budget": "privacy budget exhausted for study {name!r}",
    "data_do_not_fit": "the site's data do not fit the approved study",
    "rollback": "the site's ledger or audit log is behind what the hub last saw ({name!r})",
    "internal_error": "the site could not answer (internal error)",
}
"""Every refusal code and the hub's wording for it (the only text a refusal turns into)."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@*\-]{0,63}$")
_REF = re.compile(r"^[0-9a-f]{16}$")


def new_audit_ref() -> str:
    """A fresh random audit reference (16 hex digits): links a refusal to its audit entry."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Refusal:
    """A site's refusal: ``code`` (one of :data:`CODES`), ``name``, ``audit_ref``."""

    code: str
    name: str = ""
    audit_ref: str = ""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"refusal code {self.code!r} is not one of {sorted(CODES)}")
        if self.name and not _NAME.match(self.name):
            raise ValueError(f"refusal name must be an identifier of <= 64 characters, "
                             f"got {self.name[:80]!r}")
        if self.audit_ref and not _REF.match(self.audit_ref):
            raise ValueError("audit_ref must be 16 lowercase hex digits")

    @property
    def reason(self) -> str:
        """The fixed wording of the code, with the name and the audit reference."""
        what = CODES[self.code].format(name=self.name or "-")
        if self.code == "data_do_not_fit" and self.name:
            what += f" (rule {self.name!r})"
        ref = f" (site audit reference {self.audit_ref})" if self.audit_ref else ""
        return f"{what}{ref}"

    def text(self, site: str) -> str:
        """The one sentence the hub shows for this refusal (written at the hub)."""
        return f"site {site!r} refused: {self.reason}"

    def to_wire(self) -> dict[str, bytes]:
        """The fields of the refusal reply (see :mod:`hemafed.secure.site`)."""
        return {"status": b"refused", "code": self.code.encode("ascii"),
                "name": self.name.encode("ascii"), "ref": self.audit_ref.encode("ascii")}

    @classmethod
    def from_wire(cls, fields: dict[str, bytes]) -> Refusal:
        """Parse a refusal reply; anything malformed is ``ValueError`` (the hub rejects it)."""
        try:
            return cls(fields["code"].decode("ascii"), fields.get("name", b"").decode("ascii"),
                       fields.get("ref", b"").decode("ascii"))
        except (KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed refusal: {exc}") from exc

    def exception(self, site: str) -> HemafedError:
        """The exception the hub raises for this refusal (the class follows the code)."""
        exc: HemafedError
        if self.code == "budget":
            exc = BudgetExhausted(site, self.reason)
        elif self.code == "invalid_parameter":
            exc = InvalidInput(self.text(site))
        else:
            exc = PolicyRefused(site, self.reason)
        exc.refusal = self  # type: ignore[union-attr]
        return exc


def refusal_of(exc: BaseException) -> Refusal:
    """The refusal carried by ``exc`` (set by the site node), else a bare internal error."""
    ref = getattr(exc, "refusal", None)
    return ref if isinstance(ref, Refusal) else Refusal("internal_error")


def public_rule(exc: BaseException) -> str:
    """The rule a data-dependent failure names for the hub, or ``""``.

    Only an exception built to carry one has it (``refusal_name``, e.g. ``levels.cyto_ipssr``
    from :class:`hemafed.analytics.design.LevelsRefused`: the rule and a column of the request's
    public design, never a value or a count); anything else stays nameless.
    """
    name = getattr(exc, "refusal_name", "")
    return name if isinstance(name, str) and _NAME.match(name) else ""


_PARAM_IN_TEXT = re.compile(r"(?:parameter|field|key)s?\s+'([A-Za-z_][A-Za-z0-9_]{0,63})'")


def parameter_name(text: str, sent: Any) -> str:
    """The parameter an error message names, if it is one the hub itself sent, else ``params``.

    The name is echoed back to the hub only when it is a key of the hub's own parameters, so a
    refusal can never carry a word the site computed.
    """
    keys = set(sent) if isinstance(sent, dict) else set()
    for match in _PARAM_IN_TEXT.finditer(text):
        if match.group(1) in keys:
            return match.group(1)
    return "params"
