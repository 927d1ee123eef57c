"""Study specifications, the study runner and its report."""
