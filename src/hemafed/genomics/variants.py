"""The public variant list: the variants (chrom, pos, id, REF, ALT on one genome build) every site
aligns its genotypes to, so that sites agree on variant ids and alleles without revealing any
genotype.

The hub publishes the list (e.g. the genotyping array's manifest or a reference panel's sites);
each site checks its own file against it at intake (:func:`align`): same build, every variant of
the list present with the same alleles (REF/ALT swapped is recoded: dosage ``2 - g``; a strand
flip or other alleles is refused), no multi-allelic site unless a rule says what to do. Requests
name the list by its SHA-256, and a site whose genotypes were aligned to another list refuses.

>>> vl = VariantList.from_frame(pd.DataFrame({"chrom": ["2"], "pos": [60490908],
...     "id": ["rs1427407"], "ref": ["G"], "alt": ["T"]}), "GRCh38")
>>> len(vl), vl.build
(1, 'GRCh38')
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.atomic import write_text
from hemafed.errors import InvalidInput
from hemafed.genomics.loci import BUILD_LENGTHS

COLUMNS = ("chrom", "pos", "id", "ref", "alt")
MULTIALLELIC_RULES = ("refuse", "drop")
_ALLELE = re.compile(r"^[ACGTN]+$")
_COMPLEMENT = str.maketrans("ACGT", "TGCA")


def normalise_chrom(chrom: object) -> str:
    """'chr2' / '2' / 'chrX' -> '2' / 'X' (PLINK codes 23 -> X, 24 -> Y)."""
    c = str(chrom).strip()
    c = c[3:] if c.lower().startswith("chr") else c
    return {"23": "X", "24": "Y"}.get(c, c.upper() if c.lower() in ("x", "y") else c)


@dataclass(frozen=True)
class VariantList:
    """A checked public variant list on one genome ``build``."""

    frame: pd.DataFrame
    build: str

    def __post_init__(self) -> None:
        if self.build not in BUILD_LENGTHS:
            raise InvalidInput(f"variant list: build {self.build!r} is not one of "
                               f"{sorted(BUILD_LENGTHS)}")
        missing = [c for c in COLUMNS if c not in self.frame]
        if missing:
            raise InvalidInput(f"variant list: missing column(s) {missing}; expected {list(COLUMNS)}")
        f = self.frame
        lengths = BUILD_LENGTHS[self.build]
        bad_chrom = sorted(set(f["chrom"]) - set(lengths))
        if bad_chrom:
            raise InvalidInput(f"variant list: chromosome(s) {bad_chrom[:5]} are not on {self.build}")
        too_far = f["pos"].to_numpy() > f["chrom"].map(lengths).to_numpy()
        if (f["pos"].to_numpy() < 1).any() or too_far.any():
            i = int(np.flatnonzero(too_far | (f["pos"].to_numpy() < 1))[0])
            raise InvalidInput(f"variant list row {i + 1} ({f['id'].iat[i]}): position "
                               f"{f['pos'].iat[i]} is outside chromosome {f['chrom'].iat[i]} of "
                               f"{self.build}: wrong build?")
        for col in ("ref", "alt"):
            bad = ~f[col].str.fullmatch(_ALLELE.pattern)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InvalidInput(f"variant list row {i + 1} ({f['id'].iat[i]}): {col.upper()} "
                                   f"{f[col].iat[i]!r} is not one allele of A/C/G/T/N "
                                   "(split multi-allelic sites into biallelic rows)")
        if f["id"].duplicated().any():
            raise InvalidInput(f"variant list: duplicate id {f['id'][f['id'].duplicated()].iat[0]!r}")
        key = f["chrom"] + ":" + f["pos"].astype(str) + ":" + f["ref"] + ":" + f["alt"]
        if key.duplicated().any():
            raise InvalidInput(f"variant list: variant {key[key.duplicated()].iat[0]} listed twice")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, build: str) -> VariantList:
        f = frame.loc[:, list(COLUMNS)].copy() if set(COLUMNS) <= set(frame) else frame
        if set(COLUMNS) <= set(f):
            f["chrom"] = f["chrom"].map(normalise_chrom)
            f["pos"] = pd.to_numeric(f["pos"], errors="raise").astype(np.int64)
            for c in ("id", "ref", "alt"):
                f[c] = f[c].astype(str).str.upper() if c != "id" else f[c].astype(str)
            f = f.reset_index(drop=True)
        return cls(f, build)

    @classmethod
    def read(cls, path: str | Path) -> VariantList:
        """Read a list written by :meth:`write` (first line ``## build=NAME``, then a TSV)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read the variant list ({exc.strerror})") from None
        first, _, body = text.partition("\n")
        match = re.fullmatch(r"##\s*build=(\S+)", first.strip())
        if not match:
            raise InvalidInput(f"{path}: first line must be '## build=GRCh38' (or GRCh37)")
        try:
            frame = pd.read_csv(io.StringIO(body), sep="\t", dtype={"chrom": str, "id": str})
        except (ValueError, pd.errors.ParserError) as exc:
            raise InvalidInput(f"{path}: not a tab-separated variant list ({exc})") from None
        try:
            return cls.from_frame(frame, match.group(1))
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc}") from None

    def write(self, path: str | Path) -> None:
        write_text(path, f"## build={self.build}\n" + self.frame.to_csv(sep="\t", index=False))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def sha256(self) -> str:
        """Digest that names the list in requests (build + rows)."""
        text = self.build + "\n" + self.frame.to_csv(sep="\t", index=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Alignment:
    """For each list variant: the row of the site file holding it and whether REF/ALT are swapped."""

    rows: np.ndarray
    swapped: np.ndarray
    dropped_multiallelic: int = 0
    not_on_list: int = 0


def _complement(allele: str) -> str:
    return allele.translate(_COMPLEMENT)


def align(site: pd.DataFrame, vlist: VariantList, source: str, *,
          multiallelic: str = "refuse") -> Alignment:
    """Match a site file's variants (columns chrom, pos, id, ref, alt; ``alt`` may hold a comma
    list) to ``vlist`` by position and alleles. Raises ``InvalidInput`` naming ``source`` and
    the variant for a multi-allelic site (unless ``multiallelic="drop"``), a strand flip, other
    alleles, or a list variant the file lacks."""
    if multiallelic not in MULTIALLELIC_RULES:
        raise InvalidInput(f"multiallelic must be one of {list(MULTIALLELIC_RULES)}, "
                           f"got {multiallelic!r}")
    chrom = site["chrom"].map(normalise_chrom).to_numpy()
    pos = site["pos"].to_numpy(dtype=np.int64)
    ref = site["ref"].astype(str).str.upper().to_numpy()
    alt = site["alt"].astype(str).str.upper().to_numpy()
    key = pd.Series([f"{c}:{p}" for c, p in zip(chrom, pos, strict=True)])
    multi = (np.char.find(alt.astype(str), ",") >= 0) | key.duplicated(keep=False).to_numpy()
    if multi.any() and multiallelic == "refuse":
        i = int(np.flatnonzero(multi)[0])
        raise InvalidInput(f"{source}: variant {site['id'].iat[i]} at {chrom[i]}:{pos[i]} is "
                           "multi-allelic (several ALT alleles or several rows at one position); "
                           "split it against the variant list or pass multiallelic='drop'")
    where = {k: i for i, k in enumerate(key) if not multi[i]}
    listed = vlist.frame
    rows = np.empty(len(listed), dtype=np.int64)
    swapped = np.zeros(len(listed), dtype=bool)
    for j, (c, p, vid, r, a) in enumerate(listed[list(COLUMNS)].itertuples(index=False)):
        hit = where.get(f"{c}:{p}")
        if hit is None:
            why = "is multi-allelic there and was dropped" if f"{c}:{p}" in set(key) else "lacks it"
            raise InvalidInput(f"{source}: list variant {vid} ({c}:{p} {r}>{a}) is not usable: the "
                               f"file {why}; every site must genotype every listed variant")
        i = hit
        if (ref[i], alt[i]) == (r, a):
            rows[j] = i
        elif (ref[i], alt[i]) == (a, r):
            rows[j], swapped[j] = i, True
        elif {_complement(ref[i]), _complement(alt[i])} == {r, a}:
            raise InvalidInput(f"{source}: variant {vid} at {c}:{p} has alleles {ref[i]}/{alt[i]}, "
                               f"the list {r}/{a}: a strand flip; recode the file to the forward "
                               "strand of the list")
        else:
            raise InvalidInput(f"{source}: allele mismatch at {vid} ({c}:{p}): file REF/ALT "
                               f"{ref[i]}/{alt[i]}, variant list {r}/{a}")
    return Alignment(rows, swapped, int(multi.sum()), int(len(site) - multi.sum() - len(listed)))
