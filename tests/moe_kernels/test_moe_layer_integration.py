"""The arch MoE layer's backend="triton" runs the grouped kernels and matches the torch loop."""

import pytest
import torch

from moenas.arch.moe import MoELayer
from moenas.moe_kernels import triton_available

pytestmark = pytest.mark.skipif(
    not triton_available("cpu") and not torch.cuda.is_available(),
    reason="needs Triton (interpreter on CPU or a CUDA GPU)",
)


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_layer_triton_backend_matches_torch_backend(top_k):
    torch.manual_seed(top_k)
    ref = MoELayer(16, (24, 40, 8), top_k=top_k, backend="torch")
    tri = MoELayer(16, (24, 40, 8), top_k=top_k, backend="triton")
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 16, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_ref, out_tri = ref(x), tri(x2)
    torch.testing.assert_close(out_tri, out_ref, atol=1e-5, rtol=1e-5)
    out_ref.square().sum().backward()
    out_tri.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, atol=1e-5, rtol=1e-5)
    for (name, p_ref), p_tri in zip(ref.named_parameters(), tri.parameters()):
        torch.testing.assert_close(p_tri.grad, p_ref.grad, atol=1e-5, rtol=1e-5, msg=name)
    assert tri.expert_counts.tolist() == ref.expert_counts.tolist()


def test_auto_backend_uses_torch_on_cpu():
    layer = MoELayer(8, (8, 8), backend="auto")
    assert not layer._use_triton(torch.randn(3, 8))
