"""The fixed vocabulary of a site's refusal: what a hub may learn when a site says no.

A site's refusal is a :class:`Refusal`: one ``code`` from a small fixed set, one ``name`` (a
policy rule, a plan element, or a parameter name the hub itself sent) and an opaque ``audit_ref``
(random, so it says nothing about the data) that points to the site's audit entry, where the full
detail lives. Nothing computed from patient data, no count, value or data-dependent wording is
in a refusal. It reaches the hub through the secure sum (:func:`flag_block`, below): the hub
reads how many sites refused, the code and the name, never which site
(:meth:`PooledRefusal.text`). Only :data:`VISIBLE_CODES` are still a signed reply of the site's
own, whose text the hub writes with :meth:`Refusal.text`.

>>> r = Refusal("invalid_parameter", "epsilon", "0123456789abcdef")
>>> Refusal.from_wire(r.to_wire()) == r
True
>>> r.text("A")
"site 'A' refused: parameter 'epsilon' is invalid (site audit reference 0123456789abcdef)"
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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


# --- refusals through the secure sum ------------------------------------------------------------
#
# A site that takes part in an aggregation never refuses in a reply of its own: it sends a masked
# vector like every other site, with a *flag block* appended to its values (all zeros when it
# answers). The hub reads the block from the unmasked sum, so it learns how many sites refused and
# under which rule, never which ones. docs/security.md ("Refusals through the sum") gives the
# argument.

VISIBLE_CODES = frozenset({"rollback"})
"""Codes a site still sends in a signed refusal of its own: its audit log or ledger is behind what
the hub saw (the hub checks the same anchors per site; nothing about patients)."""

NAME_SLOTS = 64
"""One slot per character of the refusal's name (names are at most 64 ASCII characters)."""

_CODE_ORDER = tuple(CODES)
FLAG_SLOTS = len(_CODE_ORDER) + NAME_SLOTS + 2
"""Length of the flag block: a count per code, the name's characters, the batch part and a check
word binding the three (so sites refusing under different rules are told apart)."""

_PART, _CHECK = len(_CODE_ORDER) + NAME_SLOTS, len(_CODE_ORDER) + NAME_SLOTS + 1


def _check_word(code: str, name: str, part: int) -> int:
    digest = hashlib.sha256(b"hemafed-refusal\0" + code.encode("ascii") + b"\0"
                            + name.encode("ascii") + b"\0" + str(part).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little")


def flag_block(refusal: Refusal | None, part: int = 0) -> np.ndarray:
    """A site's flag block (``uint64``): zeros when it answers, else its code, name and part.

    >>> block = flag_block(Refusal("policy", "min_cell_size"))
    >>> read_flag_block(block * np.uint64(2), 3)
    PooledRefusal(refused=2, sites=3, codes=(('policy', 2),), name='min_cell_size', part=0)
    >>> read_flag_block(flag_block(None), 3) is None
    True
    """
    block = np.zeros(FLAG_SLOTS, dtype=np.uint64)
    if refusal is None:
        return block
    if part < 0:
        raise ValueError(f"a batch part is >= 0, got {part}")
    block[_CODE_ORDER.index(refusal.code)] = 1
    name = refusal.name.encode("ascii")
    block[len(_CODE_ORDER):len(_CODE_ORDER) + len(name)] = np.frombuffer(name, dtype=np.uint8)
    block[_PART] = part
    block[_CHECK] = _check_word(refusal.code, refusal.name, part)
    return block


@dataclass(frozen=True)
class PooledRefusal:
    """What the hub learns from the flag block of an unmasked sum over ``sites`` sites.

    ``refused`` sites refused (``codes``: how many under each code); when they all refused under
    the same code, name and batch part, ``name`` and ``part`` say which (else ``""`` and
    ``None``). Which sites refused is not in it: the block is a sum.
    """

    refused: int
    sites: int
    codes: tuple[tuple[str, int], ...]
    name: str = ""
    part: int | None = None

    @property
    def refusal(self) -> Refusal:
        """The refusal the hub raises (the code of the most sites; the name when all agree)."""
        code = max(self.codes, key=lambda c: c[1])[0]
        return Refusal(code, self.name if self.part is not None else "")

    def reason(self, reference: str = "") -> str:
        """The hub's wording: the rule(s), how many of the sites, and where the detail is."""
        if self.part is not None:
            what = self.refusal.reason
        else:
            # sites refused under different codes, names or parts: the codes and their counts
            what = "for different reasons (codes: " + ", ".join(
                f"{code} x{k}" for code, k in self.codes) + ")"
        ref = (f" (the sites' audit logs hold the detail under request {reference})"
               if reference else "")
        return f"{what}{ref}"

    def text(self, reference: str = "") -> str:
        """The one sentence the hub shows (no site named)."""
        return f"{self.refused} of {self.sites} sites refused: {self.reason(reference)}"

    def exception(self, reference: str = "") -> HemafedError:
        """The exception the hub raises: the class follows the code, as for :class:`Refusal`."""
        codes = {code for code, _ in self.codes}
        exc: HemafedError
        if codes == {"invalid_parameter"}:
            exc = InvalidInput(self.text(reference))
        else:
            kind = BudgetExhausted if codes == {"budget"} else PolicyRefused
            exc = kind("", self.reason(reference), who=f"{self.refused} of {self.sites} sites")
        exc.refusal = self.refusal  # type: ignore[union-attr,attr-defined]
        exc.pooled = self  # type: ignore[union-attr,attr-defined]
        return exc


def read_flag_block(block: np.ndarray, sites: int) -> PooledRefusal | None:
    """The pooled refusal in the summed flag block of ``sites`` sites, or ``None`` (all answered).

    A block no honest set of sites can sum to raises ``ValueError`` (the hub rejects the sum).
    """
    if block.shape != (FLAG_SLOTS,):
        raise ValueError(f"flag block has shape {block.shape}, expected ({FLAG_SLOTS},)")
    counts = [int(v) for v in block[:len(_CODE_ORDER)]]
    refused = sum(counts)
    if refused == 0:
        if np.any(block):
            raise ValueError("the flag block names a rule but counts no refusing site")
        return None
    if refused > sites:
        raise ValueError(f"the flag block counts {refused} refusing sites of {sites}")
    codes = tuple((c, k) for c, k in zip(_CODE_ORDER, counts, strict=True) if k)
    pooled = PooledRefusal(refused, sites, codes)
    if len(codes) != 1:
        return pooled
    chars = [int(v) for v in block[len(_CODE_ORDER):_PART]]
    part_sum = int(block[_PART])
    if any(c % refused for c in chars) or part_sum % refused:
        return pooled
    try:
        name = bytes(c // refused for c in chars).rstrip(b"\0").decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return pooled
    part = part_sum // refused
    if (name and not _NAME.match(name)) or \
            (refused * _check_word(codes[0][0], name, part)) % 2**64 != int(block[_CHECK]):
        return pooled
    return PooledRefusal(refused, sites, codes, name, part)


def random_values(size: int) -> np.ndarray:
    """Uniformly random ring elements (``uint64``): what a refusing site sends for its values."""
    return np.frombuffer(secrets.token_bytes(8 * size), dtype="<u8").astype(np.uint64)


def reference_of(references: Sequence[str], pooled: PooledRefusal) -> str:
    """The request id the refusal's detail is audited under at every site (``""``: unknown)."""
    if pooled.part is not None and 0 <= pooled.part < len(references):
        return references[pooled.part]
    return ""
