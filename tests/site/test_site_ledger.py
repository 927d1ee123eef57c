"""Tests of the privacy ledger against independently computed Gaussian-mechanism privacy."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant
from scipy.optimize import brentq
from scipy.stats import norm

from hemafed.errors import BudgetExhausted, InvalidInput
from hemafed.site.ledger import (
    PrivacyLedger,
    composed_epsilon,
    gaussian_sigma,
    noise_multiplier_for,
)
from hemafed.site.policy import Budget

CLOCK = lambda: dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # noqa: E731


def analytic_delta(eps: float, sigma: float) -> float:
    """Balle & Wang (2018), Theorem 8: exact delta of the Gaussian mechanism, sensitivity 1."""
    return float(norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma))


def analytic_sigma(eps: float, delta: float) -> float:
    return float(brentq(lambda s: analytic_delta(eps, s) - delta, 1e-2, 1e3, xtol=1e-12))


def analytic_epsilon(sigma: float, delta: float) -> float:
    return float(brentq(lambda e: analytic_delta(e, sigma) - delta, 1e-9, 100.0, xtol=1e-12))


def test_pld_calibration_matches_analytic_gaussian() -> None:
    eps, delta = 0.7, 1e-6
    ours = gaussian_sigma(eps, delta, sensitivity=2.0, accountant="pld")
    assert ours == pytest.approx(2.0 * analytic_sigma(eps, delta), rel=2e-3)


def test_rdp_calibration_between_analytic_and_classic_bound() -> None:
    eps, delta = 0.5, 1e-5
    rdp = noise_multiplier_for(eps, delta, "rdp")
    classic = math.sqrt(2 * math.log(1.25 / delta)) / eps  # Dwork & Roth Thm A.1 (eps < 1)
    assert analytic_sigma(eps, delta) <= rdp <= classic
    # a release calibrated by the ledger's accountant is exactly at its target
    assert composed_epsilon([(rdp, 1)], delta) == pytest.approx(eps, rel=1e-5)


def test_rdp_composition_against_closed_form_bounds() -> None:
    sigmas, delta = [3.0, 4.0, 5.0, 3.0], 1e-6
    ours = composed_epsilon([(s, 1) for s in sigmas], delta)
    # Gaussian RDP is alpha / (2 sigma^2) and adds up; the composition of Gaussians is exactly
    # one Gaussian with 1/sigma^2 = sum 1/sigma_i^2, whose tight epsilon is a lower bound.
    s_inv = sum(1 / s**2 for s in sigmas)
    tight = analytic_epsilon(1 / math.sqrt(s_inv), delta)
    basic = s_inv / 2 + math.sqrt(2 * s_inv * math.log(1 / delta))  # Mironov 2017, optimal alpha
    alphas = np.linspace(1.02, 500, 200_000)
    improved = np.min(alphas * s_inv / 2 + np.log1p(-1 / alphas)
                      - np.log(delta * alphas) / (alphas - 1))  # Canonne et al. 2020, Prop. 12
    assert tight < ours < basic
    assert ours == pytest.approx(improved, rel=0.02)
    assert ours >= improved - 1e-9


def _ledger(tmp_path: Path, study: float = 1.0, total: float = 1.5) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger.jsonl", "hosp-a", Budget(total, 1e-6),
                         Budget(study, 1e-6), clock=CLOCK)


def test_charges_persist_and_compose(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    nm = noise_multiplier_for(0.4, 1e-6)
    ledger.charge("S1", "cohort_size@1", 0.4, 1e-6, nm, request_id="r1")
    ledger.charge("S1", "moments@1", 0.4, 1e-6, nm, request_id="r2")
    again = _ledger(tmp_path)
    assert [c.request_id for c in again.charges()] == ["r1", "r2"]
    assert again.charges()[0].time == "2026-06-01T12:00:00+00:00"
    spent = again.spent("S1")
    assert spent.releases == 2
    assert spent.epsilon == pytest.approx(composed_epsilon([(nm, 2)], 1e-6))
    # two releases at 0.4 compose to less than the 0.8 of basic composition, more than 0.4
    assert 0.4 < spent.epsilon < 0.8
    status = again.remaining("S1")
    assert status.study.remaining == pytest.approx(1.0 - spent.epsilon)
    assert status.epsilon == min(status.study.remaining, status.total.remaining)
    assert again.spent("other").epsilon == 0.0


def test_study_budget_exhausted_refuses_and_records_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, study=1.0, total=100.0)
    nm = noise_multiplier_for(0.8, 1e-6)
    ledger.charge("S1", "cohort_size@1", 0.8, 1e-6, nm)
    before = ledger.path.read_bytes()
    with pytest.raises(BudgetExhausted) as info:
        ledger.charge("S1", "cohort_size@1", 0.8, 1e-6, nm)
    msg = str(info.value)
    assert "hosp-a" in msg and "'S1'" in msg and "spent epsilon 0.8" in msg and "budget epsilon 1" in msg
    assert ledger.path.read_bytes() == before
    # another study still has its own budget
    ledger.charge("S2", "cohort_size@1", 0.8, 1e-6, nm)


def test_total_budget_binds_across_studies(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, study=1.0, total=1.0)
    nm = noise_multiplier_for(0.7, 1e-6)
    ledger.charge("S1", "q@1", 0.7, 1e-6, nm)
    with pytest.raises(BudgetExhausted, match="site total"):
        ledger.charge("S2", "q@1", 0.7, 1e-6, nm)


def test_release_at_exactly_the_budget_fits(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, study=1.0, total=1.0)
    ledger.charge("S1", "q@1", 1.0, 1e-6, noise_multiplier_for(1.0, 1e-6))
    assert ledger.remaining("S1").epsilon == pytest.approx(0.0, abs=1e-5)


def test_noise_too_small_for_declared_epsilon_is_invalid(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(InvalidInput, match=r"more than the 0\.5 declared"):
        ledger.charge("S1", "q@1", 0.5, 1e-6, noise_multiplier_for(1.0, 1e-6))
    assert not ledger.path.exists()


def test_corrupt_line_is_named(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.charge("S1", "q@1", 0.5, 1e-6, noise_multiplier_for(0.5, 1e-6))
    with open(ledger.path, "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(InvalidInput, match="line 2"):
        ledger.spent("S1")


def test_one_gaussian_reduction_equals_event_by_event_accounting() -> None:
    events = [(3.0, 2), (7.5, 1)]
    rdp, pld = RdpAccountant(), PLDAccountant()
    for nm, count in events:
        rdp.compose(dp_accounting.GaussianDpEvent(nm), count)
        pld.compose(dp_accounting.GaussianDpEvent(nm), count)
    assert composed_epsilon(events, 1e-6, "rdp") == pytest.approx(rdp.get_epsilon(1e-6), rel=1e-9)
    # PLD composes discretised distributions pessimistically: the exact reduction is a bit lower
    exact = composed_epsilon(events, 1e-6, "pld")
    assert exact <= pld.get_epsilon(1e-6) + 1e-9
    assert exact == pytest.approx(pld.get_epsilon(1e-6), rel=0.01)
