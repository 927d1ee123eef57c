"""Medical images at the site: DICOM/NIfTI intake, IBSI radiomic features, federated ComBat.

Pixels never leave a site: images are read, validated and stored in the site directory
(:mod:`hemafed.imaging.intake`, :mod:`hemafed.imaging.store`); radiomic features are computed
there (:mod:`hemafed.imaging.radiomics`); the only things sent are secure sums, e.g. of the
ComBat harmonisation moments (:mod:`hemafed.imaging.combat`).
"""
