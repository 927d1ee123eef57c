"""An approved study as the site reads it: the spec model and the plan's hook, below the site.

:mod:`hemafed.studyplan.spec` parses and validates a study specification against the analysis
kinds and spec rules registered in the process; :mod:`hemafed.studyplan.plans` is how a site
derives an approved study's plan without importing the study layer. The public import paths
stay :mod:`hemafed.study.spec` and :mod:`hemafed.study.plan`, which register the built-ins.
"""
