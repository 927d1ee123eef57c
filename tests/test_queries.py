import numpy as np
import pandas as pd
import pytest

from hemafed.cohort import validate_cohort
from hemafed.errors import InvalidInput
from hemafed.federation.queries import get_query


def test_first_queries_compute_and_check_bounds() -> None:
    cohort = validate_cohort(pd.DataFrame({"patient_id": ["a", "b", "c"], "disease": ["MDS"] * 3,
                                           "hb": [8.0, 10.0, None], "sex": ["M", "F", "M"]}))
    assert get_query("cohort_size").run(cohort, {})["n"].tolist() == [3.0]
    counts = get_query("category_counts").run(cohort, {"column": "sex", "levels": ["M", "F"]})
    assert counts["counts"].tolist() == [2.0, 1.0]
    moments = get_query("moments").run(cohort, {"column": "hb", "low": 2, "high": 25})
    np.testing.assert_allclose([moments["n"][0], moments["sum"][0], moments["sum_sq"][0]],
                               [2, 18, 164])
    with pytest.raises(InvalidInput, match="outside the declared bounds"):
        get_query("moments").run(cohort, {"column": "hb", "low": 2, "high": 9})
    with pytest.raises(InvalidInput, match="unknown query"):
        get_query("no_such_query")
