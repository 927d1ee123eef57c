"""Federated analytics: survival (Kaplan-Meier, log-rank, Cox), regression and descriptive
statistics, each a registered site query plus a hub step that only sees secure sums.

Importing the package registers the survival site queries, so a site process that imports
``hemafed.analytics`` can answer them.
"""

from hemafed.analytics import concordance_queries as concordance_queries
from hemafed.analytics import cox_queries as cox_queries
from hemafed.analytics import coxph_startstop as coxph_startstop
from hemafed.analytics import finegray as finegray
from hemafed.analytics import graytest as graytest
from hemafed.analytics import km_queries as km_queries
