"""Snapshot scoring: every training seed generates with its own noise (the protocol seed plus its offset), the base
too (paired design), with more generations at the points the report leans on."""

from types import SimpleNamespace

from easytune.core.evaluation.protocol import ProtocolConfig
from easytune.core.study import scoring
from easytune.core.study.scoring import (
    SEED_OFFSET,
    ScoreTask,
    ScoringInputs,
    base_scoring_task,
    run_scoring_tasks,
    score_task,
)


def test_score_task_offsets_the_protocol_seed_and_leaves_the_shared_protocol_alone(monkeypatch):
    seen, generations = [], []
    fake_generator = SimpleNamespace(denoiser=SimpleNamespace(load_state_dict=lambda sd: None))
    monkeypatch.setattr(scoring, "load_generator", lambda *a, **k: fake_generator)
    monkeypatch.setattr(scoring, "build_from_checkpoint", lambda *a, **k: object())
    monkeypatch.setattr(scoring, "generator_source", lambda *a, **k: "source")

    def evaluate(source, test, text, stats, evaluator, classifier, protocol, num_joints, device):
        seen.append(protocol.seed)
        generations.append(protocol.generation_replications)
        return SimpleNamespace(wall_s=0.0, metrics={"R@1": {"mean": 0.5}, "FID": {"mean": 1.0}})

    monkeypatch.setattr(scoring, "evaluate_source", evaluate)
    protocol = ProtocolConfig(seed=7)
    inputs = ScoringInputs({}, None, {}, None, None, None, None, protocol, 22)
    for seed in (1, 2, 3):
        score_task(inputs, ScoreTask(f"run seed {seed}", {}, seed_offset=SEED_OFFSET * seed))
    score_task(inputs, ScoreTask("base", None))
    assert seen == [7 + 1000, 7 + 2000, 7 + 3000, 7]
    assert inputs.protocol.seed == 7
    score_task(inputs, ScoreTask("final", {}, generations=2))
    assert generations == [1, 1, 1, 1, 2] and inputs.protocol.generation_replications == 1


def test_the_base_is_scored_per_seed_with_that_seeds_noise_like_its_snapshots():
    sd = {"w": 0}
    base = base_scoring_task(4, generations=2)
    assert base.state_dict is None and base.seed_offset == SEED_OFFSET * 4 and base.generations == 2
    tasks = run_scoring_tasks("a", 4, [sd, sd, sd], admissible=1, generations=2, keep=True)
    assert {t.seed_offset for t in tasks} == {base.seed_offset}  # the base of seed s shares the noise of s's runs
    assert [t.generations for t in tasks] == [2, None, 2]  # admissible and final points: 2 generations
    assert [t.keep for t in tasks] == [True, False, False]  # the first seed's admissible point is kept
    later = run_scoring_tasks("a", 9, [sd, sd, sd], admissible=3, generations=2, keep=False)
    assert [t.generations for t in later] == [None, None, 2] and not any(t.keep for t in later)
    assert {t.seed_offset for t in later} == {SEED_OFFSET * 9}
    at_base = run_scoring_tasks("b", 4, [sd, sd], admissible=0, generations=2, keep=True)
    # the admissible point is the base: one more task generates it with the seed's noise, kept; snapshots not kept
    assert len(at_base) == 3 and at_base[-1].state_dict is None and at_base[-1].keep
    assert at_base[-1].seed_offset == SEED_OFFSET * 4 and not any(t.keep for t in at_base[:2])
    assert [t.generations for t in at_base[:2]] == [None, 2]
