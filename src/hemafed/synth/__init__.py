"""Synthetic virtual patients: federated DP marginal-based synthesis (MST, AIM), a local Gaussian
copula generator for use inside one site, and their evaluation (fidelity, utility, privacy)."""

from hemafed.synth.aim import FederatedAIM
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.domain import ColumnSpec, SynthDomain, enforce_constraints
from hemafed.synth.evaluate import DEFAULT_THRESHOLDS, EvaluationReport, evaluate
from hemafed.synth.mst import FederatedMST, Measurement

__all__ = ["DEFAULT_THRESHOLDS", "ColumnSpec", "EvaluationReport", "FederatedAIM", "FederatedMST",
           "GaussianCopulaSynthesizer", "Measurement", "SynthDomain", "enforce_constraints",
           "evaluate"]
