"""Synthetic virtual patients: federated DP marginal-based synthesis (MST, AIM), a local Gaussian
copula generator and a tabular VAE for use inside one site, and their evaluation (fidelity,
utility, privacy). ``TabularVAESynthesizer`` is loaded on first access, so importing this package
never imports PyTorch (the optional extra ``hemafed[torch]``)."""

from typing import TYPE_CHECKING, Any

from hemafed.synth.aim import FederatedAIM
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.domain import ColumnSpec, SynthDomain, enforce_constraints
from hemafed.synth.evaluate import DEFAULT_THRESHOLDS, EvaluationReport, evaluate
from hemafed.synth.mst import FederatedMST, Measurement

__all__ = ["DEFAULT_THRESHOLDS", "ColumnSpec", "EvaluationReport", "FederatedAIM", "FederatedMST",
           "GaussianCopulaSynthesizer", "Measurement", "SynthDomain", "enforce_constraints",
           "evaluate"]

if TYPE_CHECKING:
    from hemafed.synth.tvae import TabularVAESynthesizer as TabularVAESynthesizer


def __getattr__(name: str) -> Any:
    """Lazy ``TabularVAESynthesizer`` (its module imports torch only when constructed)."""
    if name == "TabularVAESynthesizer":
        from hemafed.synth.tvae import TabularVAESynthesizer

        return TabularVAESynthesizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
