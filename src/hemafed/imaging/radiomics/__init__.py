"""IBSI-standard radiomic features (first-order, morphology, GLCM, GLRLM, GLSZM).

Our own implementation of the IBSI definitions (Zwanenburg et al., Radiology 2020; the IBSI
reference manual), verified feature by feature against the IBSI digital-phantom reference values
(:mod:`hemafed.imaging.radiomics.ibsi_phantom`). :func:`extract` is the entry point.
"""

from hemafed.imaging.radiomics.extract import FeatureSettings, extract, feature_names

__all__ = ["FeatureSettings", "extract", "feature_names"]
