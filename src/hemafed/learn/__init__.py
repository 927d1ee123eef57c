"""Federated model training and validation: histogram gradient boosting on secure sums of
gradient/Hessian histograms (:mod:`~hemafed.learn.gbdt`), federated evaluation metrics
(:mod:`~hemafed.learn.metrics`) and the site-alone / federated / pooled study design
(:mod:`~hemafed.learn.study`)."""
