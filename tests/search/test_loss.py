"""The fused projection + cross-entropy equals F.cross_entropy on the full logits: loss and both
gradients, with and without label smoothing, PAD targets ignored, chunks that split rows."""

import pytest
import torch

from moenas.search.loss import linear_cross_entropy, reference_cross_entropy


@pytest.mark.parametrize("dim,vocab,chunk", [(16, 97, 7), (64, 800, 512), (24, 50, 1000)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_loss_equals_the_reference(dim, vocab, chunk, smoothing):
    g = torch.Generator().manual_seed(dim + vocab)
    h = torch.randn(3, 40, dim, generator=g, requires_grad=True)
    w = torch.randn(vocab, dim, generator=g, requires_grad=True)
    t = torch.randint(4, vocab, (3, 40), generator=g)
    t[:, 30:] = 0  # PAD: ignored by both
    a = linear_cross_entropy(h, w, t, smoothing, chunk=chunk)
    ga = torch.autograd.grad(a, (h, w))
    b = reference_cross_entropy(h @ w.t(), t, smoothing)
    gb = torch.autograd.grad(b, (h, w))
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
    s = linear_cross_entropy(h.detach(), w.detach(), t, smoothing, reduction="sum", chunk=chunk)
    assert float(s) == pytest.approx(float(b) * int(t.ne(0).sum()), rel=1e-5)
