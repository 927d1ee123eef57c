"""Differential privacy: noise calibration for releases (accounting lives in each site's ledger)."""
