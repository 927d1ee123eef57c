"""Federated genomics: genotype intake at the site (VCF/BCF, PLINK 1 and 2), federated variant QC,
principal components and genome-wide association through secure sums, equal to PLINK 2 on the
pooled data; a virtual sickle-cell genotype cohort for demos and tests.

Importing :mod:`hemafed.genomics.queries` registers the site queries (the runtime does it).
"""
