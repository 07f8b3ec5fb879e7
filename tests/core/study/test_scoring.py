"""Snapshot scoring: every training seed generates with its own noise (the protocol seed plus its offset)."""

from types import SimpleNamespace

from easytune.core.evaluation.protocol import ProtocolConfig
from easytune.core.study import scoring
from easytune.core.study.scoring import SEED_OFFSET, ScoreTask, ScoringInputs, score_task


def test_score_task_offsets_the_protocol_seed_and_leaves_the_shared_protocol_alone(monkeypatch):
    seen = []
    fake_generator = SimpleNamespace(denoiser=SimpleNamespace(load_state_dict=lambda sd: None))
    monkeypatch.setattr(scoring, "load_generator", lambda *a, **k: fake_generator)
    monkeypatch.setattr(scoring, "build_from_checkpoint", lambda *a, **k: object())
    monkeypatch.setattr(scoring, "generator_source", lambda *a, **k: "source")

    def evaluate(source, test, text, stats, evaluator, classifier, protocol, num_joints, device):
        seen.append(protocol.seed)
        return SimpleNamespace(wall_s=0.0, metrics={"R@1": {"mean": 0.5}, "FID": {"mean": 1.0}})

    monkeypatch.setattr(scoring, "evaluate_source", evaluate)
    protocol = ProtocolConfig(seed=7)
    inputs = ScoringInputs({}, None, {}, None, None, None, None, protocol, 22)
    for seed in (1, 2, 3):
        score_task(inputs, ScoreTask(f"run seed {seed}", {}, seed_offset=SEED_OFFSET * seed))
    score_task(inputs, ScoreTask("base", None))
    assert seen == [7 + 1000, 7 + 2000, 7 + 3000, 7]
    assert inputs.protocol.seed == 7
