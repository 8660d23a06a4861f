"""The judgment & correction mechanism: confident [SEG] vectors pass, weak ones are corrected."""

import torch

from model.jcm import JCM


def test_jcm_keeps_confident_vectors_and_corrects_weak_ones():
    torch.manual_seed(0)
    jcm = JCM(dim=8, hidden=16, beta=0.6)
    h = torch.randn(4, 8)
    with torch.no_grad():
        jcm.judge.mlp[-1].bias.fill_(10.0)  # q ~ 1 -> keep
        kept, q, corrected = jcm(h)
        assert torch.equal(kept, h) and not corrected.any() and (q > 0.99).all()
        jcm.judge.mlp[-1].bias.fill_(-10.0)  # q ~ 0 -> correct
        fixed, q, corrected = jcm(h)
        assert corrected.all() and torch.allclose(fixed, jcm.corrector(h))
