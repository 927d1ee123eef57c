"""Linear mixed models for repeated measurements, fitted by REML across sites.

The model is ``y ~ t + x + (1 + t | patient)``: fixed effects for an intercept, the time ``t`` and
covariates ``x``, and a random intercept and slope per patient, as ``lme4::lmer(..., REML=TRUE)``
fits it. Patients do not span sites, so the REML criterion is a sum over patients, hence over
sites. With lme4's parametrisation (relative covariance factor ``Lambda(theta)``, lower
triangular, ``D = sigma^2 Lambda Lambda'``; ``V_i = I + Z_i Lambda Lambda' Z_i'``) each site
returns, for a public ``theta``, the secure-summable

    sum log|V_i|,  sum X_i' V_i^-1 X_i,  sum X_i' V_i^-1 y_i,  sum y_i' V_i^-1 y_i

and their derivatives in ``theta``; the hub profiles out ``beta`` and ``sigma^2`` and minimises

    log|V| + log|X'V^-1 X| + (n - p) (1 + log(2 pi r / (n - p))),   r = y'V^-1 y - b'A^-1 b

(lme4's REML criterion) with the exact gradient, then polishes with Newton steps on a
finite-difference Hessian of that gradient until the gradient vanishes to rounding.

Repeated measurements live in a long table beside the patient table: a
:class:`LongitudinalCohort` (one row per patient and visit: ``patient_id``, the time column,
measured values). Covariates come from that table (time-varying) or from the patient table
(baseline). A site keeps its table in ``cohort/measurements.parquet``;
:func:`longitudinal_site_handler` is the site-handler factory that attaches it.

>>> import numpy as np
>>> relative_factor([1.0, 0.5, 2.0]) @ relative_factor([1.0, 0.5, 2.0]).T
array([[1.  , 0.5 ],
       [0.5 , 4.25]])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from hemafed.analytics.describe import codec_resolution
from hemafed.analytics.fitter import FederatedFitter, deprecated_alias, renamed_argument
from hemafed.cohort.model import Cohort
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register

log = logging.getLogger(__name__)

MEASUREMENTS_FILE = Path("cohort") / "measurements.parquet"
REML_QUERY = "lmm_reml_sums"
DEFAULT_RESOLUTION = 1e-10
N_THETA = 3


# --- data --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LongitudinalCohort(Cohort):
    """A cohort with a long table of repeated measurements (``patient_id`` plus numeric columns).

    Every measurement's patient must be in the patient table; checked at construction.
    """

    measurements: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"patient_id": pd.Series(dtype="string")}))

    def __post_init__(self) -> None:
        m = self.measurements
        if "patient_id" not in m.columns:
            raise InvalidInput("the measurement table needs a 'patient_id' column")
        unknown = set(m["patient_id"].astype(str)) - set(self.patients["patient_id"].astype(str))
        if unknown:
            raise InvalidInput(f"{len(unknown)} measurement row patient(s) are not in the patient "
                               "table; import the patients first")

    @classmethod
    def attach(cls, cohort: Cohort, measurements: pd.DataFrame) -> LongitudinalCohort:
        """The same cohort with ``measurements`` beside it."""
        return cls(cohort.patients, cohort.mutations, cohort.panels,
                   measurements.reset_index(drop=True))


def read_measurements(site_dir: str | Path) -> pd.DataFrame:
    """The site's measurement table (``cohort/measurements.parquet``)."""
    path = Path(site_dir) / MEASUREMENTS_FILE
    if not path.is_file():
        raise InvalidInput(f"{path}: no measurement table at this site; write the long table of "
                           "repeated measurements there (patient_id, time, values)")
    return pd.read_parquet(path)


def import_measurements(site_dir: str | Path, measurements: pd.DataFrame, study: str) -> int:
    """Write the site's measurement table with the same keyed pseudonyms as its patients.

    Every row's patient must already be imported in ``study``'s pseudonym domain; the file is
    replaced atomically. Returns the number of rows written.
    """
    from hemafed.atomic import write_with
    from hemafed.site.pseudonym import Pseudonymiser
    from hemafed.site.store import load_cohort, site_secret

    if "patient_id" not in measurements.columns:
        raise InvalidInput("the measurement table needs a 'patient_id' column")
    pseudo = Pseudonymiser(site_secret(site_dir))
    table = measurements.reset_index(drop=True).copy()
    table["patient_id"] = [pseudo.pseudonym(str(p), study) for p in table["patient_id"]]
    known = set(load_cohort(site_dir).patients["patient_id"].astype(str))
    missing = int((~table["patient_id"].isin(known)).sum())
    if missing:
        raise InvalidInput(f"{missing} measurement row(s) belong to patients not imported at "
                           f"this site in study {study!r}; import the patients first")
    write_with(Path(site_dir) / MEASUREMENTS_FILE, lambda fh: table.to_parquet(fh, index=False))
    return len(table)


def longitudinal_site_handler(config: Mapping[str, Any], *,
                              enrich: Callable[[Cohort], Cohort] | None = None) -> Any:
    """Site-handler factory (as :func:`hemafed.site.runtime.site_handler`, ``enrich`` its
    cohort enrichment hook) whose cohort also holds the site's measurement table, so
    ``lmm_reml_sums`` can run there. The standard one, with every catalogued query and the
    derived scores, is :func:`hemafed.study.site_runtime.longitudinal_site_handler`."""
    from hemafed.site import runtime

    handle = runtime.site_handler(config, enrich=enrich)
    site_dir = Path(str(config["site_dir"]))
    rt = runtime.open_runtime(site_dir, enrich)
    if not isinstance(rt.node.cohort, LongitudinalCohort):
        rt.node.cohort = LongitudinalCohort.attach(rt.node.cohort, read_measurements(site_dir))
    return handle


# --- parameters --------------------------------------------------------------------------------

def relative_factor(theta: Sequence[float] | np.ndarray) -> np.ndarray:
    """lme4's ``Lambda``: lower triangular, ``theta`` column-wise ``(L11, L21, L22)``."""
    t = np.asarray(theta, dtype=float)
    return np.array([[t[0], 0.0], [t[1], t[2]]])


def _unit(k: int) -> np.ndarray:
    e = np.zeros((2, 2))
    e[[(0, 0), (1, 0), (1, 1)][k]] = 1.0
    return e


def _bounds(params: Params, columns: Sequence[str]) -> tuple[tuple[float, float], ...]:
    raw = params.get("bounds")
    if not isinstance(raw, Mapping):
        raise InvalidInput("parameter 'bounds' must map the outcome, time and covariate columns "
                           "to public [low, high] bounds")
    out = []
    for col in columns:
        b = raw.get(col)
        if (not isinstance(b, list | tuple) or len(b) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           and math.isfinite(v) for v in b)
                or not b[0] < b[1]):
            raise InvalidInput(f"parameter 'bounds' needs finite [low, high] for column {col!r}")
        out.append((float(b[0]), float(b[1])))
    return tuple(out)


@dataclass(frozen=True)
class RemlParams(QueryParams):
    """``lmm_reml_sums``: the outcome, time and covariate columns with their public bounds,
    the most measurements per patient and the relative factor ``theta`` the sums are taken at."""

    QUERY = REML_QUERY
    outcome: str
    time: str
    theta: tuple[float, ...]
    bounds: tuple[tuple[float, float], ...]
    """``(low, high)`` of the outcome, the time and each covariate, in that order."""
    covariates: tuple[str, ...] = ()
    max_obs: int = 50
    resolution: float = DEFAULT_RESOLUTION
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> RemlParams:
        cls.known(params)
        ycol, tcol = checks.column(params, "outcome"), checks.column(params, "time")
        covs = () if params.get("covariates") is None else \
            checks.names(params, "covariates", allow_empty=True)
        return cls(ycol, tcol, checks.numbers(params, "theta", length=N_THETA),
                   _bounds(params, [ycol, tcol, *covs]), covs,
                   checks.positive_int(params, "max_obs", 50, cap=10_000),
                   checks.resolution(params, default=DEFAULT_RESOLUTION),
                   checks.max_patients(params))

    @property
    def columns(self) -> tuple[str, ...]:
        """The outcome, the time and the covariates (the order of ``bounds``)."""
        return (self.outcome, self.time, *self.covariates)

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        out["bounds"] = {c: list(b) for c, b in zip(self.columns, self.bounds, strict=True)}
        return out


# --- the site's per-patient cross-products -----------------------------------------------------

@dataclass(frozen=True)
class PatientBlocks:
    """Per-patient cross-products of the complete measurement rows (patients on axis 0)."""

    ztz: np.ndarray
    ztx: np.ndarray
    zty: np.ndarray
    xtx: np.ndarray
    xty: np.ndarray
    yty: np.ndarray
    n_obs: int
    excluded: int


def patient_blocks(cohort: Cohort, params: RemlParams) -> PatientBlocks:
    """Build ``X = [1, t, x]``, ``Z = [1, t]`` per patient from the complete rows and sum the
    cross-products patient by patient."""
    if not isinstance(cohort, LongitudinalCohort):
        raise InvalidInput("this site holds no measurement table (cohort/measurements.parquet)")
    ycol, tcol, covs = params.outcome, params.time, list(params.covariates)
    m = cohort.measurements
    if m.empty:  # a site without measurements contributes nothing
        p = 2 + len(covs)
        return PatientBlocks(np.zeros((0, 2, 2)), np.zeros((0, 2, p)), np.zeros((0, 2)),
                             np.zeros((0, p, p)), np.zeros((0, p)), np.zeros(0), 0, 0)
    frame = pd.DataFrame({"patient_id": m["patient_id"].astype(str)})
    base = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    for col in [ycol, tcol, *covs]:
        if col in m.columns:
            src = m[col]
        elif col in base.columns and col not in (ycol, tcol):
            src = frame["patient_id"].map(base[col])
        else:
            raise InvalidInput(f"column {col!r} is neither in the site's measurement table nor "
                               "(for a covariate) in its patient table")
        try:
            frame[col] = pd.to_numeric(src.astype("Float64"), errors="raise").to_numpy(
                dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            raise InvalidInput(f"column {col!r} is not numeric") from None
    complete = frame.dropna()
    for col, (lo, hi) in zip(params.columns, params.bounds, strict=True):
        v = complete[col].to_numpy()
        if v.size and (v.min() < lo or v.max() > hi):
            raise InvalidInput(f"column {col!r} has values outside its declared bounds "
                               f"[{lo:g}, {hi:g}]; widen them (nothing is clipped)")
    ids, inverse = np.unique(complete["patient_id"].to_numpy(), return_inverse=True)
    per = np.bincount(inverse, minlength=ids.size)
    if per.size and per.max() > params.max_obs:
        raise InvalidInput("a patient has more measurements than the declared max_obs; raise it")
    y = complete[ycol].to_numpy()
    t = complete[tcol].to_numpy()
    x = np.column_stack([np.ones(y.size), t, *(complete[c].to_numpy() for c in covs)])
    z = x[:, :2]
    k = ids.size

    def acc(values: np.ndarray) -> np.ndarray:
        out = np.zeros((k, *values.shape[1:]))
        np.add.at(out, inverse, values)
        return out

    return PatientBlocks(
        ztz=acc(z[:, :, None] * z[:, None, :]), ztx=acc(z[:, :, None] * x[:, None, :]),
        zty=acc(z * y[:, None]), xtx=acc(x[:, :, None] * x[:, None, :]),
        xty=acc(x * y[:, None]), yty=acc(y * y), n_obs=int(y.size),
        excluded=int(len(frame) - len(complete)))


def reml_sums(blocks: PatientBlocks, theta: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """The summed REML pieces at ``theta`` and their derivatives (one row per ``theta_k``)."""
    lam = relative_factor(theta)
    b = blocks
    k = b.ztz.shape[0]
    inner = np.eye(2)[None] + np.einsum("ji,kjl,lm->kim", lam, b.ztz, lam)
    logdet = np.linalg.slogdet(inner)[1] if k else np.zeros(0)
    mid = np.einsum("ij,kjl,ml->kim", lam, np.linalg.inv(inner), lam) if k else np.zeros((0, 2, 2))
    # Woodbury: V^-1 = I - Z M Z'
    xtz = np.swapaxes(b.ztx, 1, 2)
    a = b.xtx - np.einsum("kia,kab,kbj->kij", xtz, mid, b.ztx)
    bv = b.xty - np.einsum("kia,kab,kb->ki", xtz, mid, b.zty)
    c = b.yty - np.einsum("ka,kab,kb->k", b.zty, mid, b.zty)
    q = b.ztz - np.einsum("kia,kab,kbj->kij", b.ztz, mid, b.ztz)
    r_x = b.ztx - np.einsum("kia,kab,kbj->kij", b.ztz, mid, b.ztx)
    r_y = b.zty - np.einsum("kia,kab,kb->ki", b.ztz, mid, b.zty)
    p = b.xtx.shape[-1]
    d_ld, d_a = np.zeros(N_THETA), np.zeros((N_THETA, p, p))
    d_b, d_c = np.zeros((N_THETA, p)), np.zeros(N_THETA)
    for j in range(N_THETA):
        e = _unit(j)
        g = e @ lam.T + lam @ e.T
        d_ld[j] = float(np.einsum("kab,ba->", q, g))
        d_a[j] = -np.einsum("kai,ab,kbj->ij", r_x, g, r_x)
        d_b[j] = -np.einsum("kai,ab,kb->i", r_x, g, r_y)
        d_c[j] = -float(np.einsum("ka,ab,kb->", r_y, g, r_y))
    return {"logdet": np.array([float(np.sum(logdet))]), "xvx": a.sum(axis=0),
            "xvy": bv.sum(axis=0), "yvy": np.array([float(c.sum())]),
            "d_logdet": d_ld, "d_xvx": d_a, "d_xvy": d_b, "d_yvy": d_c,
            "n_obs": np.array([float(b.n_obs)]), "n_patients": np.array([float(k)]),
            "excluded": np.array([float(b.excluded)])}


def _reml_compute(cohort: Cohort, params: RemlParams) -> dict[str, np.ndarray]:
    return reml_sums(patient_blocks(cohort, params), params.theta)


def _reml_declare(params: RemlParams) -> dict[str, Statistic]:
    mp, mo = params.max_patients, params.max_obs
    ay, *rest = (max(abs(lo), abs(hi)) for lo, hi in params.bounds)
    ax = np.array([1.0, *rest])
    p = ax.size
    lam_f = float(np.linalg.norm(np.asarray(params.theta, dtype=float)))
    s = mo * (1.0 + ax[1] ** 2)  # ||Z_i||_F^2 bound
    g = 2.0 * lam_f  # ||G_k||_F bound
    res = params.resolution
    # one patient's X'V^-1X has Frobenius norm <= ||X||_F^2 <= mo ||ax||^2 (V >= I), and
    # ||X'V^-1y|| <= ||X||_F ||y|| <= mo ||ax|| ay: the whole matrix/vector, not its largest
    # entry (which understated the sensitivity by up to a factor p)
    xx_f, xy_f = mo * float(ax @ ax), mo * ay * float(np.linalg.norm(ax))

    def stat(shape: tuple[int, ...], per_patient: float, signed: bool = True) -> Statistic:
        hi = mp * per_patient
        lo = -hi if signed else 0.0
        return Statistic(shape, lo, hi, codec_resolution(lo, hi, res), sensitivity=per_patient)

    ld = 2.0 * math.log1p(lam_f**2 * s)
    return {"logdet": stat((1,), ld, signed=False), "xvx": stat((p, p), xx_f),
            "xvy": stat((p,), xy_f), "yvy": stat((1,), mo * ay * ay, signed=False),
            "d_logdet": stat((N_THETA,), g * s), "d_xvx": stat((N_THETA, p, p), g * s * xx_f),
            "d_xvy": stat((N_THETA, p), g * s * xy_f),
            "d_yvy": stat((N_THETA,), g * s * mo * ay * ay),
            "n_obs": Statistic((1,), 0, mp * mo, sensitivity=mo, is_count=True),
            "n_patients": Statistic((1,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp * mo, sensitivity=mo, is_count=True)}


LMM_REML_SUMS = register(Query(
    REML_QUERY, "1", compute=_reml_compute, declare=_reml_declare, params_type=RemlParams,
    description="REML pieces of a random-intercept-and-slope linear mixed model at public theta: "
                "log|V|, X'V^-1X, X'V^-1y, y'V^-1y and their theta-derivatives"))


# --- hub side ----------------------------------------------------------------------------------

def reml_criterion(sums: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """lme4's REML criterion (``-2 log L_R``, profiled) and its gradient in ``theta``."""
    a, b = np.asarray(sums["xvx"]), np.asarray(sums["xvy"])
    n, p = float(sums["n_obs"][0]), a.shape[0]
    ainv = np.linalg.inv(a)
    beta = ainv @ b
    r = float(sums["yvy"][0] - b @ beta)
    _, logdet_a = np.linalg.slogdet(a)
    df = n - p
    dev = float(sums["logdet"][0]) + logdet_a + df * (1.0 + math.log(2.0 * math.pi * r / df))
    grad = np.zeros(N_THETA)
    for k in range(N_THETA):
        da, db = sums["d_xvx"][k], sums["d_xvy"][k]
        dr = float(sums["d_yvy"][k] - 2.0 * beta @ db + beta @ da @ beta)
        grad[k] = float(sums["d_logdet"][k]) + float(np.trace(ainv @ da)) + df * dr / r
    return dev, grad


class FederatedLinearMixedModel(FederatedFitter):
    """``y ~ t + x + (1 + t | patient)`` by REML on secure sums (lme4's parametrisation).

    After :meth:`fit`: ``params_`` (fixed effects), ``standard_errors_``, ``summary`` (estimate,
    SE, t, p from the normal), ``theta_``, ``sigma_`` (residual SD), ``random_effects_cov_``
    (``D``), ``variance_components`` (SDs and correlation, as ``VarCorr``), ``reml_criterion_``,
    ``rows_`` (measurements used), ``n_`` (patients), ``excluded_``, ``rounds``, ``sites_``:
    the names every fitter uses (issue 14). The former ``n_obs_``, ``n_patients_`` and
    ``sites`` still read, with a DeprecationWarning, and a model saved under them loads.
    """

    def __init__(self, alpha: float = 0.05, max_rounds: int = 300, gtol: float = 1e-9) -> None:
        if not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        self.alpha, self.max_rounds, self.gtol = alpha, max_rounds, gtol
        self.params_: pd.Series | None = None
        self.sites_: tuple[str, ...] = ()
        self.rounds = 0

    def _sums(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        if self.rounds >= self.max_rounds:
            raise ConvergenceError(f"REML did not converge in {self.max_rounds} secure sums; "
                                   "raise max_rounds")
        res = self._federation.secure_sum(REML_QUERY, self._base | {
            "theta": [float(v) for v in theta]}, study=self._study)
        self.rounds += 1
        sites = tuple(sorted(res.sites))
        if self.sites_ and sites != self.sites_:
            raise ConvergenceError(f"the contributing sites changed between rounds "
                                   f"({self.sites_} then {sites}); rerun on a stable set of sites")
        self.sites_ = sites
        return {k: np.asarray(v, dtype=float) for k, v in res.values.items()}

    def _eval(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        key = tuple(float(v) for v in theta)
        if key not in self._cache:
            sums = self._sums(np.asarray(theta, dtype=float))
            self._cache[key] = (*reml_criterion(sums), sums)
        dev, grad, _ = self._cache[key]
        return dev, grad

    def fit(self, federation: Federation, outcome_col: str | None = None,
            time_col: str | None = None, formula: Sequence[str] = (), *,
            bounds: Mapping[str, Sequence[float]], max_obs: int = 50,
            start: Sequence[float] = (1.0, 0.0, 1.0), study: str = "default",
            covariates: Sequence[str] | None = None, outcome: str | None = None,
            time: str | None = None) -> FederatedLinearMixedModel:
        """Fit by REML. ``formula``: the fixed-effect covariates (column names) besides the
        time column ``time_col`` (default ``"time"``); ``bounds`` holds public [low, high] for
        the outcome, time and covariates. (``covariates=``, ``outcome=`` and ``time=`` are the
        former names of ``formula=``, ``outcome_col=`` and ``time_col=``, still read with a
        warning.)"""
        name = "FederatedLinearMixedModel.fit"
        covariates = renamed_argument(name, "formula", tuple(formula) or None, "covariates",
                                      covariates, default=())
        outcome = renamed_argument(name, "outcome_col", outcome_col, "outcome", outcome)
        time = renamed_argument(name, "time_col", time_col, "time", time, default="time")
        self._federation, self._study, self.sites_, self.rounds = federation, study, (), 0
        self._cache: dict[tuple[float, ...], tuple[float, np.ndarray, dict[str, np.ndarray]]] = {}
        self._base: dict[str, Any] = {
            "outcome": outcome, "time": time, "covariates": list(covariates),
            "bounds": {k: [float(v) for v in b] for k, b in bounds.items()},
            "max_obs": int(max_obs)}
        RemlParams.from_mapping(self._base | {"theta": list(start)})
        first = self._sums(np.asarray(start, dtype=float))
        p = 2 + len(covariates)
        n, k = float(first["n_obs"][0]), float(first["n_patients"][0])
        if n <= p or k < 2:
            raise InvalidInput(f"too few measurements ({n:g}) or patients ({k:g}) for {p} fixed "
                               "effects and a random intercept and slope")
        if abs(np.linalg.det(first["xvx"])) < 1e-12 * max(1.0, float(np.abs(first["xvx"]).max())):
            raise InvalidInput("the fixed-effect design is singular (a covariate is constant or "
                               "collinear with the time or the others); drop it")
        self._cache[tuple(float(v) for v in start)] = (*reml_criterion(first), first)
        opt = optimize.minimize(self._eval, np.asarray(start, dtype=float), jac=True,
                                method="L-BFGS-B",
                                bounds=[(0.0, None), (None, None), (0.0, None)],
                                # loose on purpose: Newton polishing (below) takes it from
                                # here to the optimum in 2-3 steps, while L-BFGS-B's own
                                # last digits would hunt in the fixed-point rounding
                                options={"ftol": 1e-10, "gtol": 1e-4, "maxiter": 200})
        theta = self._polish(np.asarray(opt.x, dtype=float))
        self._finish(theta, [str(c) for c in covariates], time)
        return self

    def _hessian(self, theta: np.ndarray, free: np.ndarray) -> np.ndarray:
        """Central differences of the exact gradient in the free coordinates."""
        h = 1e-5 * np.maximum(1.0, np.abs(theta))
        hess = np.zeros((N_THETA, N_THETA))
        for j in np.flatnonzero(free):
            e = np.zeros(N_THETA)
            e[j] = h[j]
            hess[:, j] = (self._eval(theta + e)[1] - self._eval(theta - e)[1]) / (2 * h[j])
        return 0.5 * (hess + hess.T)[np.ix_(free, free)]

    def _polish(self, theta: np.ndarray) -> np.ndarray:
        """Newton steps with one finite-difference Hessian of the exact gradient, until the
        Newton decrement ``g' H^-1 g`` is below ``1e-18 |REML|``: a scale-free rule, above the
        fixed-point rounding of the secure sums (about 1e-8 in the gradient) and far below any
        digit that matters. A variance at its zero bound stays there."""
        free = np.array([theta[0] > 1e-6, True, theta[2] > 1e-6])
        hf: np.ndarray | None = None
        for _ in range(10):
            dev, grad = self._eval(theta)
            if np.max(np.abs(grad[free])) < self.gtol:
                break
            if hf is None:
                hf = self._hessian(theta, free)
                if np.any(np.linalg.eigvalsh(hf) <= 0):
                    log.warning("REML: the Hessian is not positive definite at the L-BFGS-B "
                                "optimum; keeping it")
                    break
            direction = np.linalg.solve(hf, grad[free])
            if float(grad[free] @ direction) < 1e-18 * max(1.0, abs(dev)):
                break
            cand = theta.copy()
            cand[free] -= direction
            cand[[0, 2]] = np.maximum(cand[[0, 2]], 0.0)
            if self._eval(cand)[0] > dev + 1e-12 * abs(dev):
                break
            theta = cand
        return theta

    def _finish(self, theta: np.ndarray, covariates: list[str], time: str) -> None:
        dev, grad, sums = self._cache[tuple(float(v) for v in theta)]
        a, b = sums["xvx"], sums["xvy"]
        n, p = float(sums["n_obs"][0]), a.shape[0]
        ainv = np.linalg.inv(a)
        beta = ainv @ b
        sigma2 = float(sums["yvy"][0] - b @ beta) / (n - p)
        names = ["(Intercept)", time, *covariates]
        lam = relative_factor(theta)
        self.theta_ = theta
        self.gradient_ = grad
        self.reml_criterion_ = dev
        self.sigma_ = math.sqrt(sigma2)
        self.params_ = pd.Series(beta, index=pd.Index(names, name="term"), name="estimate")
        self.variance_matrix_ = pd.DataFrame(sigma2 * ainv, index=names, columns=names)
        self.standard_errors_ = pd.Series(np.sqrt(np.diag(sigma2 * ainv)), index=names,
                                          name="std_error")
        self.random_effects_cov_ = pd.DataFrame(sigma2 * lam @ lam.T,
                                                index=["(Intercept)", time],
                                                columns=["(Intercept)", time])
        self.rows_, self.n_ = int(n), int(sums["n_patients"][0])
        self.excluded_ = int(sums["excluded"][0])
        log.info("federated LMM: REML %.6f after %d secure sums over %d sites", dev,
                 self.rounds, len(self.sites_))

    cov_params_ = deprecated_alias("variance_matrix_", "cov_params_")
    n_obs_ = deprecated_alias("rows_", "n_obs_")
    n_patients_ = deprecated_alias("n_", "n_patients_")
    sites = deprecated_alias("sites_", "sites")

    def _need_fit(self) -> pd.Series:
        if self.params_ is None:
            raise InvalidInput("call fit(...) first")
        return self.params_

    @property
    def summary(self) -> pd.DataFrame:
        """Fixed effects: estimate, std. error, t value, normal p, confidence interval."""
        params = self._need_fit()
        se = self.standard_errors_
        z = params / se
        crit = stats.norm.ppf(1 - self.alpha / 2)
        level = f"{100 * (1 - self.alpha):g}%"
        return pd.DataFrame({"estimate": params, "std_error": se, "t": z,
                             "p": 2 * stats.norm.sf(np.abs(z)),
                             f"lower {level}": params - crit * se,
                             f"upper {level}": params + crit * se})

    @property
    def variance_components(self) -> pd.DataFrame:
        """Standard deviations and the intercept-slope correlation, as lme4's ``VarCorr``."""
        self._need_fit()
        d = self.random_effects_cov_.to_numpy()
        sd = np.sqrt(np.diag(d))
        corr = d[0, 1] / (sd[0] * sd[1]) if sd.all() else float("nan")
        names = list(self.random_effects_cov_.index)
        return pd.DataFrame({"variance": [d[0, 0], d[1, 1], self.sigma_**2],
                             "std_dev": [sd[0], sd[1], self.sigma_],
                             "corr": [float("nan"), corr, float("nan")]},
                            index=pd.Index([f"patient {names[0]}", f"patient {names[1]}",
                                            "residual"], name="component"))

    def _payload(self) -> dict[str, Any]:
        self._need_fit()
        return {"kind": "linear_mixed_model", "method": "REML",
                                "summary": self.summary,
                                "variance_components": self.variance_components,
                                "theta": self.theta_, "reml_criterion": self.reml_criterion_,
                                "n_obs": self.rows_, "n_patients": self.n_,
                                "excluded": self.excluded_, "rounds": self.rounds,
                                "sites": list(self.sites_)}
