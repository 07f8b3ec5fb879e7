"""Resume keys: fingerprints see values (not only shapes); a mismatch names the differing parts."""

import numpy as np
import torch

from easytune.core.infra.resume import RESUME_FORMAT_VERSION, ResumeKey, fingerprint


def test_fingerprint_sees_values_dtypes_and_module_weights():
    a = np.zeros((2, 3), np.float32)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.astype(np.float64))
    b = a.copy()
    b[1, 2] = 1e-7
    assert fingerprint(a) != fingerprint(b)
    torch.manual_seed(0)
    m1 = torch.nn.Linear(3, 2)
    torch.manual_seed(1)
    m2 = torch.nn.Linear(3, 2)  # same shapes, another seed
    assert fingerprint(m1) != fingerprint(m2)
    assert fingerprint({"x": 1, "y": [1, 2]}) == fingerprint({"y": [1, 2], "x": 1})
    assert fingerprint(np.array(["a b", "c"])) != fingerprint(np.array(["a", "b c"]))


def test_key_mismatch_names_the_parts_that_differ():
    key = ResumeKey.of(config={"lr": 1e-5}, seed=1234, data=np.arange(4))
    record = key.to_record()
    assert key.mismatch(record) is None
    assert record["format_version"] == str(RESUME_FORMAT_VERSION)
    other = ResumeKey.of(config={"lr": 1e-5}, seed=999, data=np.arange(4))
    assert other.mismatch(record) == "it was written by another run (seed differ)"
    assert "no resume key" in key.mismatch({"config_digest": "abc"})  # a file of the previous format
    stale = dict(record, format_version="1")
    stale["digest"] = "0"
    assert "format_version" in key.mismatch(stale)
