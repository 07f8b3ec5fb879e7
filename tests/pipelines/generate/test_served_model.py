"""The logged MLflow model (easytune.serving) of the tiny fine-tuned generator: registered with its aliases, and
``mlflow.pyfunc.load_model(...).predict`` gives the joints of the ``generate`` pipeline for the same prompt and seed;
a bad request is an MlflowException with INVALID_PARAMETER_VALUE (HTTP 400 when served) naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.pipelines.generate.served import log_tiny_model, tracking_store
from tests.pipelines.generate.test_pipeline import params, run


@pytest.fixture(scope="module")
def served(tmp_path_factory, empty_mlflow_db):
    folder = tmp_path_factory.mktemp("served")
    empty_mlflow_db(folder / "mlflow.db")  # the store log_tiny_model logs into
    report = log_tiny_model(folder)
    with tracking_store(folder):
        import mlflow

        yield folder, report, mlflow.pyfunc.load_model("models:/easytune_generator@champion")


def test_the_model_is_registered_with_signature_and_input_example(served):
    import mlflow

    folder, report, model = served
    assert report["logged"] and report["aliases"] == ["easytune_step", "champion"] and report["version"] == 1
    with tracking_store(folder):
        version = mlflow.MlflowClient().get_model_version_by_alias("easytune_generator", "champion")
        assert version.run_id == report["run_id"]
    signature = model.metadata.signature
    assert [c.name for c in signature.inputs.inputs] == ["prompt", "length", "seed", "samples"]
    assert {"joints", "bvh", "frames"} <= set(signature.outputs.input_names())
    assert model.metadata.saved_input_example_info is not None


def test_predict_equals_the_generate_pipeline(served, tmp_path, one_torch_thread):
    _, _, model = served
    out, _ = run(tmp_path, params(prompts=["12#a person walks forward", "0.5s#a person jumps"],
                                  samples_per_prompt=2, video={"format": "none", "strip_frames": 0}))
    rows = json.loads((out / "easytune_step" / "index.json").read_text())
    expected = {}
    for row in rows:
        with np.load(out / "easytune_step" / row["joints"], allow_pickle=False) as npz:
            expected[(row["prompt"], row["seed"])] = npz["joints"]
    # no seeds: motion k from seed 0 + k, as generate; a seed given: that motion alone
    motions = model.predict(pd.DataFrame([{"prompt": "a person walks forward", "length": 12, "samples": 2},
                                          {"prompt": "0.5s#a person jumps", "samples": 2}]))
    again = model.predict(pd.DataFrame([{"prompt": "a person jumps", "length": "0.5s", "seed": 3}]))
    assert [(m["prompt"], m["seed"], m["frames"]) for m in motions] == [
        ("a person walks forward", 0, 12), ("a person walks forward", 1, 12), ("a person jumps", 2, 10),
        ("a person jumps", 3, 10)]
    for m in [*motions, *again]:
        assert m["joints"].shape == (m["frames"], 22, 3)
        np.testing.assert_array_equal(m["joints"], expected[(m["prompt"], m["seed"])])
        assert m["bvh"].startswith("HIERARCHY") and f"Frames: {m['frames']}" in m["bvh"]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"prompt": ""}], "empty prompt"),
    ([{"prompt": "a person jumps", "length": 25}], "longer than the model's maximum of 24 frames"),
    ([{"prompt": "a person jumps", "samples": 17}], "at most serve.max_motions"),
    ([{"prompt": b"\xff a person"}], "not text"),
])
def test_bad_requests_are_invalid_parameter_errors(served, rows, message):
    from mlflow.exceptions import MlflowException

    _, _, model = served
    with pytest.raises(MlflowException) as err:
        model.predict(rows)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and message in err.value.message
    assert err.value.get_http_status_code() == 400
