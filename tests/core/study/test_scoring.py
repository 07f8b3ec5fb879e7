"""Snapshot scoring: every training seed generates with its own noise (the protocol seed plus its offset), the base
too (paired design), with more generations at the points the report leans on."""

from types import SimpleNamespace

from easytune.core.evaluation.protocol import ProtocolConfig
from easytune.core.study import scoring
from easytune.core.study.scoring import SEED_OFFSET, ScoreTask, ScoringInputs, score_task, scoring_tasks


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
    snapshots = {"a": [[sd, sd, sd], [sd, sd, sd]], "b": [[sd, sd, sd], [sd, sd, sd]]}
    chosen = {"a": [1, 3], "b": [0, 2]}  # admissible snapshot per seed (b's first seed: the base)
    tasks, where = scoring_tasks([4, 9], snapshots, chosen, generations=2)
    offsets: dict = {}
    for task, (variant, r, j) in zip(tasks, where, strict=True):
        offsets.setdefault(r, set()).add(task.seed_offset)
        assert (task.state_dict is None) == (variant == "base") and (j == 0) == (variant == "base")
    assert offsets == {0: {SEED_OFFSET * 4}, 1: {SEED_OFFSET * 9}}  # the base of seed s shares the noise of s's runs
    assert [w for w in where if w[0] == "base"] == [("base", 0, 0), ("base", 1, 0)]
    gens = {w: t.generations for t, w in zip(tasks, where, strict=True)}
    assert gens[("base", 0, 0)] == gens[("base", 1, 0)] == 2  # the base, final and admissible points: 2 generations
    assert [gens[("a", 0, j)] for j in (1, 2, 3)] == [2, None, 2] and [gens[("a", 1, j)] for j in (1, 2, 3)] == [
        None, None, 2]
    assert [gens[("b", 1, j)] for j in (1, 2, 3)] == [None, 2, 2]
    kept = [w for t, w in zip(tasks, where, strict=True) if t.keep]  # first seed's admissible point of each variant
    assert kept == [("base", 0, 0), ("a", 0, 1)]
