"""Fixed-point encoding of declared statistics into one vector of integers modulo 2**64.

Each statistic declares its bounds and resolution (:class:`hemafed.release.Statistic`).
A site's value ``x`` becomes the integer ``v = round(x / resolution) - floor(low / resolution)``
in ``[0, levels]``; a value outside ``[low, high]`` raises ``InvalidInput`` (never clipped).
Wide statistics (Cox risk-set sums, whose public bounds are many orders of magnitude above their
typical values) need more than 53 bits: ``v`` is then split into two *limbs* of
:data:`LIMB_BITS` bits, each summed separately modulo 2**64 (the sum of up to 2**15 sites' limbs
cannot wrap), and decoding recombines them in exact integer arithmetic before one final float
multiplication, so the decoded sum has float64 precision relative to its *actual* size, not to
its declared bounds. All statistics of one query are concatenated, in name order, into one
``uint64`` vector.

>>> from hemafed.release import Statistic
>>> layout = FixedPointLayout.from_specs({"n": Statistic((2,), 0, 100)}, n_sites=3)
>>> layout.decode_sum(layout.encode({"n": np.array([1.0, 2.0])}) * np.uint64(3), 3)["n"]
array([3., 6.])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.release import Statistic

MODULUS_BITS = 64
MODULUS = 2**MODULUS_BITS
LIMB_BITS = 48
LIMB = float(2**LIMB_BITS)
#: Largest number of levels one element may take: two limbs of 48 bits.
MAX_LEVELS = 2**(2 * LIMB_BITS)


def levels_of(stat: Statistic) -> int:
    """Number of fixed-point steps between ``low`` and ``high`` (the largest encoded value)."""
    return int(np.floor(stat.high / stat.resolution)) - int(np.floor(stat.low / stat.resolution)) + 1


def limbs_of(stat: Statistic) -> int:
    """1 limb when every encoded value fits 48 bits, else 2."""
    return 1 if levels_of(stat) < 2**LIMB_BITS else 2


def _split(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued floats -> (high, low) int64 limbs, exactly: ``q = high * 2**48 + low``."""
    hi = np.floor(q / LIMB)
    lo = q - hi * LIMB  # exact: a multiple of ulp(q) below 2**48
    return hi.astype(np.int64), lo.astype(np.int64)


def specs_to_json(specs: Mapping[str, Statistic]) -> bytes:
    """Canonical JSON of declared statistics (exact: floats round-trip through ``repr``)."""
    doc = {name: {"shape": list(s.shape), "low": s.low, "high": s.high,
                  "resolution": s.resolution, "sensitivity": s.sensitivity,
                  "is_count": s.is_count}
           for name, s in specs.items()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def specs_from_json(data: bytes) -> dict[str, Statistic]:
    """Inverse of :func:`specs_to_json`; malformed input raises ``InvalidInput``."""
    try:
        doc = json.loads(data.decode("utf-8"))
        return {name: Statistic(tuple(int(d) for d in s["shape"]), float(s["low"]),
                                float(s["high"]), float(s["resolution"]),
                                float(s["sensitivity"]), bool(s["is_count"]))
                for name, s in doc.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"malformed statistic declarations: {exc}") from None


@dataclass(frozen=True)
class FixedPointLayout:
    """Where each statistic lives in the concatenated vector, and how it is encoded."""

    specs: tuple[tuple[str, Statistic], ...]
    n_sites: int

    def __post_init__(self) -> None:
        if self.n_sites < 1:
            raise InvalidInput(f"n_sites must be >= 1, got {self.n_sites}")
        names = [name for name, _ in self.specs]
        if names != sorted(names) or len(set(names)) != len(names):
            raise InvalidInput("statistics must be distinct and in name order")
        for name, stat in self.specs:
            levels = levels_of(stat)
            if levels > MAX_LEVELS:
                raise InvalidInput(
                    f"statistic {name!r}: (high - low) / resolution = {levels:.3g} steps is more "
                    f"than 2**{2 * LIMB_BITS}; use a coarser resolution or tighter bounds")
            top = levels if limbs_of(stat) == 1 else 2**LIMB_BITS
            if self.n_sites * top >= MODULUS:
                raise InvalidInput(
                    f"statistic {name!r}: the sum of {self.n_sites} sites can reach "
                    f"{self.n_sites} * {top} = {self.n_sites * top} steps, which does not fit "
                    f"the 2**{MODULUS_BITS} modulus; use a coarser resolution or tighter bounds")

    @classmethod
    def from_specs(cls, specs: Mapping[str, Statistic], n_sites: int) -> FixedPointLayout:
        """Layout of ``specs`` (ordered by name) for sums over up to ``n_sites`` sites."""
        if not specs:
            raise InvalidInput("a secure sum needs at least one declared statistic")
        return cls(tuple(sorted(specs.items())), n_sites)

    @property
    def size(self) -> int:
        """Length of the concatenated vector (wide statistics take two limbs per element)."""
        return sum(stat.size * limbs_of(stat) for _, stat in self.specs)

    def check_values(self, values: Mapping[str, np.ndarray], where: str = "site") -> None:
        """Raise ``InvalidInput`` unless ``values`` match the declarations exactly."""
        declared = {name for name, _ in self.specs}
        if set(values) != declared:
            raise InvalidInput(f"{where}: values {sorted(values)} do not match the declared "
                               f"statistics {sorted(declared)}")
        for name, stat in self.specs:
            arr = np.asarray(values[name], dtype=float)
            if arr.shape != stat.shape:
                raise InvalidInput(f"{where}: statistic {name!r} has shape {arr.shape}, "
                                   f"declared {stat.shape}")
            if not np.all(np.isfinite(arr)):
                raise InvalidInput(f"{where}: statistic {name!r} has non-finite values")
            if arr.size:
                bad = np.flatnonzero((arr < stat.low) | (arr > stat.high))
                if bad.size:
                    i = int(bad[0])
                    raise InvalidInput(
                        f"{where}: statistic {name!r} element {i} = {float(arr.flat[i])!r} is outside "
                        f"its declared bounds [{stat.low:g}, {stat.high:g}] ({bad.size} element(s) "
                        f"out of bounds); nothing is clipped: widen the declared bounds")

    def encode(self, values: Mapping[str, np.ndarray], where: str = "site") -> np.ndarray:
        """Concatenated fixed-point encoding (``uint64``) of one site's values."""
        self.check_values(values, where)
        parts = []
        for name, stat in self.specs:
            arr = np.asarray(values[name], dtype=float).ravel()
            q = np.rint(arr / stat.resolution)
            base = float(np.floor(stat.low / stat.resolution))
            if limbs_of(stat) == 1:
                parts.append((q - base).astype(np.int64).astype(np.uint64))
                continue
            q_hi, q_lo = _split(q)
            b_hi, b_lo = _split(np.array([base]))
            lo = q_lo - b_lo[0]
            hi = q_hi - b_hi[0] - (lo < 0)
            lo = np.where(lo < 0, lo + 2**LIMB_BITS, lo)
            parts.append(np.concatenate([hi, lo]).astype(np.uint64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)

    def decode_sum(self, total: np.ndarray, n_contributors: int) -> dict[str, np.ndarray]:
        """Split the encoded sum of ``n_contributors`` sites back into named float arrays."""
        if total.shape != (self.size,):
            raise InvalidInput(f"encoded sum has shape {total.shape}, expected ({self.size},)")
        if not 0 <= n_contributors <= self.n_sites:
            raise InvalidInput(f"n_contributors must be in [0, {self.n_sites}], "
                               f"got {n_contributors}")
        out: dict[str, np.ndarray] = {}
        pos = 0
        for name, stat in self.specs:
            width = stat.size * limbs_of(stat)
            chunk = total[pos:pos + width]
            pos += width
            base = int(np.floor(stat.low / stat.resolution))
            if limbs_of(stat) == 1:
                # exact in integers: sum of q = sum of v + n * base
                if abs(n_contributors * base) < 2**62:
                    steps = chunk.astype(np.int64) + n_contributors * base
                    decoded = steps.astype(np.float64) * stat.resolution
                else:  # pragma: no cover - bounds far from zero at a very fine resolution
                    big = chunk.astype(object) + n_contributors * base
                    decoded = np.array([float(v) for v in big]) * stat.resolution
            else:
                b_hi, b_lo = divmod(base, 2**LIMB_BITS)
                hi = chunk[:stat.size].astype(np.int64) + n_contributors * b_hi
                lo = chunk[stat.size:].astype(np.int64) + n_contributors * b_lo
                decoded = (hi.astype(np.float64) * LIMB + lo.astype(np.float64)) * stat.resolution
            out[name] = decoded.reshape(stat.shape)
        return out
