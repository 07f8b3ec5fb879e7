"""Consistency distillation: the student starts as the teacher, the loss on constructed (analytic) teachers, the
skipping-step solver is the project's DDIM step, the EMA target, and a tiny resumable training run."""

import copy
import math

import pytest
import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.pretrain.distillation import (
    ConsistencyDistiller,
    ConsistencyTraining,
    DistillationConfig,
    build_student,
)
from easytune.core.sampling.consistency import ConsistencyDiffusion, ConsistencySamplerConfig
from easytune.core.sampling.diffusion import Diffusion, DiffusionConfig
from tests.core.finetune.tiny import TEXT, make_mld, make_text


class LinearEps(nn.Module):
    """eps(x, t, text, guidance) = (a + b * s) * x (+ text-independent): a constructed denoiser with a known output.
    With ``drop_text`` the coefficient is ``a_uncond`` (the teacher's unconditional branch)."""

    def __init__(self, a: float, b: float = 0.0, a_uncond: float | None = None):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b, self.a_uncond = b, a_uncond

    def forward(self, x, t, text, mask=None, drop_text=None, guidance=None):
        coef = self.a.expand(x.shape[0])
        if drop_text is not None and self.a_uncond is not None:
            coef = torch.where(drop_text, torch.full_like(coef, self.a_uncond), coef)
        if guidance is not None:
            coef = coef + self.b * guidance
        return coef.reshape(-1, 1, 1) * x


class PointMassEps(nn.Module):
    """The exact denoiser of data that is a point mass at ``c``: eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""

    def __init__(self, c: torch.Tensor, abar: torch.Tensor):
        super().__init__()
        self.register_buffer("c", c)
        self.register_buffer("abar", abar)
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so it can be checked to get no gradient

    def forward(self, x, t, text, mask=None, drop_text=None, guidance=None):
        a = self.abar[t.cpu()].reshape(-1, 1, 1)
        return self.scale * (x - a.sqrt() * self.c) / (1 - a).sqrt()


def _sampler(**kw):
    return ConsistencyDiffusion(ConsistencySamplerConfig(**kw))


def _scalings(t: int):
    r = 10.0 * t
    return 0.25 / (r * r + 0.25), r / math.sqrt(r * r + 0.25)


def test_student_starts_as_the_teachers_conditional_branch():
    mld = make_mld()
    student = build_student(mld.denoiser)
    text, x = make_text(), torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(0))
    for t, s in ((999, 7.5), (300, 12.0), (0, 1.0)):
        tt = torch.full((3,), t)
        torch.testing.assert_close(student(x, tt, text, guidance=torch.full((3,), s)),
                                   mld.denoiser(x, tt, text), rtol=0, atol=0)
    extra = sum(p.numel() for p in student.guidance_embed.parameters())
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in mld.denoiser.parameters()) + extra
    with pytest.raises(ValueError, match="not allowed"):
        build_student(mld.denoiser, {"d_model": 32})
    with pytest.raises(ValueError, match="cannot differ"):
        ConsistencyTraining(model={"num_layers": 3})


def _token_mld() -> LatentDenoiser:
    """A tiny MLD latent denoiser with the cpu preset's text-token cross-attention (TextTokenContext)."""
    torch.manual_seed(0)
    return LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=1, latent_dim=8, text_dim=TEXT,
                                               d_model=16, ff_dim=32, text_tokens=True)).eval()


def test_student_of_a_token_conditioned_teacher_reads_the_tokens_as_the_teacher():
    """A teacher with text_tokens: the student gets its token context and cross-attention (weights copied), so it
    starts as the teacher's conditional branch token for token; one changed word changes both alike, padding changes
    neither, a dropped caption masks every token; the guided teacher solver passes the tokens to both branches."""
    teacher = _token_mld()
    student = build_student(teacher).eval()
    assert student.config.text_tokens and student.text_context is not None
    assert all(torch.equal(student.state_dict()[k], v) for k, v in teacher.state_dict().items())
    text, t = make_text(), torch.tensor([3, 400, 999])
    x = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(0))
    s = torch.full((3,), 7.5)
    out = student(x, t, text, guidance=s)
    torch.testing.assert_close(out, teacher(x, t, text), rtol=0, atol=0)
    word = TextBatch(text.sentence, text.tokens.clone(), text.token_lengths, text.rows)
    word.tokens[:, 1] += 1.0  # one word of each caption, same sentence embedding
    changed = student(x, t, word, guidance=s)
    assert (changed - out).abs().amax(dim=(1, 2)).min() > 1e-4
    torch.testing.assert_close(changed, teacher(x, t, word), rtol=0, atol=0)
    padded = TextBatch(text.sentence, text.tokens.clone(), torch.tensor([2, 3, 3]), text.rows)
    moved = TextBatch(padded.sentence, padded.tokens.clone(), padded.token_lengths, padded.rows)
    moved.tokens[0, 2:] = 5.0  # caption 0 has 2 valid tokens: the third is padding
    torch.testing.assert_close(student(x, t, moved, guidance=s), student(x, t, padded, guidance=s))
    drop = torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(student(x, t, word, drop_text=drop, guidance=s),
                               student(x, t, text, drop_text=drop, guidance=s))
    d = ConsistencyDistiller(student, teacher, nn.Identity(), _sampler(), DistillationConfig())
    ddim = Diffusion(DiffusionConfig(num_inference_steps=10))
    tt = torch.full((3,), 499)
    with torch.no_grad():
        cond, uncond = teacher(x, tt, word), teacher(x, tt, word, None, drop)
        expected, _ = ddim.step(uncond + 7.5 * (cond - uncond), 499, x, num_steps=10)
        got = d.teacher_solver(x, tt, tt - 100, s, word)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got - d.teacher_solver(x, tt, tt - 100, s, text)).abs().max() > 1e-5  # the tokens reach the teacher


def test_sharded_losses_average_to_the_single_process_loss():
    """Data-parallel distillation: each rank's rows of one global batch draw the global batch's posterior noise, grid
    indices, noise and guidance scales (``shard``), so equal shards' losses average to the one-process loss."""
    from easytune.core.infra.distributed import Shard

    mld = make_mld()
    d = ConsistencyDistiller(build_student(mld.denoiser), mld.denoiser, mld.vae, _sampler(), DistillationConfig())
    d.eval()
    feats = torch.randn(4, 12, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[1, 8:] = False
    text = make_text(4)
    with torch.no_grad():
        full = d.loss(feats, mask, text, generator=torch.Generator().manual_seed(5))
        sharded, unsharded = [], []
        for start in (0, 2):
            rows = slice(start, start + 2)
            part = TextBatch(text.sentence[rows], text.tokens[rows], text.token_lengths[rows], text.rows[rows])
            sharded.append(d.loss(feats[rows], mask[rows], part, generator=torch.Generator().manual_seed(5),
                                  shard=Shard(start, start + 2, 4)))
            unsharded.append(d.loss(feats[rows], mask[rows], part, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close((sharded[0] + sharded[1]) / 2, full, rtol=1e-5, atol=1e-7)
    assert ((unsharded[0] + unsharded[1]) / 2 - full).abs() > 1e-5  # ranks drawing only their rows would not


def test_loss_on_a_constructed_teacher_matches_the_hand_computation():
    """Linear teacher / student / target: every quantity of LCM Algorithm 1 in closed form (float64 by hand)."""
    sampler = _sampler()
    a_c, a_u, a_s, b_s, a_t = 0.3, -0.2, 0.1, 0.02, 0.05
    teacher = LinearEps(a_c, a_uncond=a_u)
    student = LinearEps(a_s, b_s)
    cfg = DistillationConfig(loss="huber", huber_c=0.5)
    d = ConsistencyDistiller(student, teacher, nn.Identity(), sampler, cfg)
    with torch.no_grad():
        d.target.a.fill_(a_t)  # the target network differs from the student (it lags behind it)
    z0 = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1))
    index, scale = torch.tensor([0, 3, 9, 5]), torch.tensor([6.0, 7.5, 16.0, 10.0])
    pred, target = d.consistency_pair(z0, noise, index, scale, make_text(4))

    abar = Diffusion(DiffusionConfig()).alphas_cumprod.double()
    z0, noise = z0.double(), noise.double()
    for b in range(4):
        t_s = 100 * (int(index[b]) + 1) - 1
        t_e = max(t_s - 100, 0)
        s = float(scale[b])
        x = abar[t_s].sqrt() * z0[b] + (1 - abar[t_s]).sqrt() * noise[b]
        eps_student = (a_s + b_s * s) * x
        c_skip, c_out = _scalings(t_s)
        x0 = (x - (1 - abar[t_s]).sqrt() * eps_student) / abar[t_s].sqrt()
        torch.testing.assert_close(pred[b].double(), c_skip * x + c_out * x0, rtol=1e-5, atol=1e-6)
        eps_teacher = (a_u + s * (a_c - a_u)) * x  # classifier-free guidance with this example's scale
        x0_teacher = (x - (1 - abar[t_s]).sqrt() * eps_teacher) / abar[t_s].sqrt()
        x_e = abar[t_e].sqrt() * x0_teacher + (1 - abar[t_e]).sqrt() * eps_teacher  # DDIM, eta 0
        eps_target = (a_t + b_s * s) * x_e
        c_skip, c_out = _scalings(t_e)
        x0_e = (x_e - (1 - abar[t_e]).sqrt() * eps_target) / abar[t_e].sqrt()
        expected = c_skip * x_e + c_out * x0_e
        torch.testing.assert_close(target[b].double(), expected, rtol=1e-5, atol=1e-6)
        if t_e == 0:  # boundary condition: the target is the teacher's DDIM step itself
            torch.testing.assert_close(target[b].double(), x_e, rtol=1e-6, atol=1e-6)
    diff = (pred - target).double()
    torch.testing.assert_close(d.distance(pred, target).double(), (torch.sqrt(diff ** 2 + 0.25) - 0.5).mean())
    d.config = DistillationConfig(loss="l2")
    torch.testing.assert_close(d.distance(pred, target), ((pred - target) ** 2).mean())


def test_loss_vanishes_for_the_exact_consistency_function_of_a_point_mass_teacher():
    """Data = a point mass at c: the teacher's ODE maps every x_t to c, and a student predicting the teacher's (exact)
    noise is its consistency function: zero loss (up to the c_skip of the grid's first point), a wrong one is not."""
    sampler = _sampler()
    c = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(2))
    exact = PointMassEps(c, sampler.alphas_cumprod)
    d = ConsistencyDistiller(copy.deepcopy(exact), exact, nn.Identity(), sampler, DistillationConfig())
    z0 = c.expand(6, 2, 3).clone()
    noise = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(3))
    index, scale = torch.tensor([1, 2, 4, 6, 8, 9]), torch.full((6,), 9.0)
    pred, target = d.consistency_pair(z0, noise, index, scale, make_text(6))
    torch.testing.assert_close(pred, c.expand_as(pred), rtol=0, atol=1e-4)
    assert float(d.distance(pred, target).detach()) < 1e-8
    # t_n = 0: the target is the teacher's last DDIM step, which lands on the t = 0 marginal (abar_0 < 1), not on c
    pred, target = d.consistency_pair(z0, noise, torch.zeros(6, dtype=torch.int64), scale, make_text(6))
    abar0 = sampler.alphas_cumprod[0]
    torch.testing.assert_close(target, abar0.sqrt() * c + (1 - abar0).sqrt() * noise, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        d.student.scale.fill_(0.5)  # a wrong student
    loss = d.distance(*d.consistency_pair(z0, noise, index, scale, make_text(6)))
    assert float(loss.detach()) > 1e-2
    loss.backward()
    assert d.student.scale.grad.abs() > 0 and d.teacher.scale.grad is None and d.target.scale.grad is None


def test_teacher_solver_is_the_projects_ddim_step_of_the_guided_mld():
    mld = make_mld()
    sampler = _sampler()
    d = ConsistencyDistiller(build_student(mld.denoiser), mld.denoiser, mld.vae, sampler, DistillationConfig())
    ddim = Diffusion(DiffusionConfig(num_inference_steps=10))  # DDIM from t to t - 100, as the grid's skip
    text = make_text()
    x = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(4))
    for t in (999, 499, 199):
        expected, _ = ddim.step(mld.denoise(x, t, text, None, guidance_scale=7.5), t, x, num_steps=10)
        got = d.teacher_solver(x, torch.full((3,), t), torch.full((3,), t - 100), torch.full((3,), 7.5), text)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ema_target_follows_the_student_one_optimizer_step_behind():
    mld = make_mld()
    student = build_student(mld.denoiser)
    d = ConsistencyDistiller(student, mld.denoiser, mld.vae, _sampler(), DistillationConfig(ema_decay=0.9)).train()
    assert not d.teacher.training and not d.target.training and not d.vae.training and d.student.training
    assert not any(p.requires_grad for p in (*d.target.parameters(), *d.teacher.parameters()))
    feats = torch.randn(3, 12, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 12, dtype=torch.bool)
    text = make_text()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    initial = copy.deepcopy(student.state_dict())
    loss = d.training_loss(feats, mask, text)  # step 1: no EMA update yet
    assert all(torch.equal(v, initial[k]) for k, v in d.target.state_dict().items())
    loss.backward()
    opt.step()
    after_step = copy.deepcopy(student.state_dict())
    d.training_loss(feats, mask, text)  # step 2: the EMA update of optimizer step 1, then the loss
    for k, v in d.target.state_dict().items():
        torch.testing.assert_close(v, 0.9 * initial[k] + 0.1 * after_step[k])
    assert int(d.optimizer_steps) == 2
    d.eval()
    before = copy.deepcopy(d.target.state_dict())
    d.training_loss(feats, mask, text)  # eval mode (validation): no update, no count
    assert int(d.optimizer_steps) == 2 and all(torch.equal(v, before[k]) for k, v in d.target.state_dict().items())


def test_tiny_distillation_is_deterministic_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """The pretrain entry point: 6 steps, interrupted at 3 and resumed == uninterrupted (EMA state included)."""
    from easytune.core.infra.config import from_dict
    from easytune.core.pretrain.base_generators import PretrainConfig, train_consistency_model
    from tests.core.finetune.tiny import make_splits

    train, val, text = make_splits(12)
    mld = make_mld()

    def run(max_steps: int, resume_dir):
        cfg = from_dict(PretrainConfig, {
            "data": {"batch_size": 4, "max_frames": 12, "val_batches": 1},
            "consistency_model": {"train": {"max_steps": max_steps, "warmup_steps": 1, "val_every": 3,
                                            "resume_every": 3, "lr": 1e-3, "restore_best": False}},
            "resume_dir": resume_dir}, where="test")
        return train_consistency_model(train, val, text, cfg, torch.device("cpu"), 0, copy.deepcopy(mld))

    full, result = run(6, None)
    assert result.steps == 6 and math.isfinite(result.train_loss) and math.isfinite(result.val_loss)
    assert full.kind == "mlcm" and full.diffusion.config.num_inference_steps == 4
    original = ConsistencyDistiller.training_loss
    calls = {"n": 0}

    def killed_after_four(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ConsistencyDistiller, "training_loss", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        run(6, str(tmp_path))  # killed in step 5, after the resume file of step 3
    monkeypatch.setattr(ConsistencyDistiller, "training_loss", original)
    torch.manual_seed(999)  # a restarted process: another global RNG state, which the resume file restores
    resumed, result = run(6, str(tmp_path))
    assert result.resumed_from == 3
    for (k, v), w in zip(full.denoiser.state_dict().items(), resumed.denoiser.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    assert any((a - b).abs().max() > 0 for a, b in zip(full.denoiser.parameters(),
                                                        build_student(mld.denoiser).parameters(), strict=True))
