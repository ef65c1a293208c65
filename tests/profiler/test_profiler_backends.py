"""Every registered timing backend, on every device it has here, passes the shared contract."""

import pytest

from moenas.arch import UserError
from moenas.arch.family import FAMILIES
from moenas.profiler.backends import BACKENDS, Backend, available, get_backend, register_backend
from moenas.profiler.testing import backend_cases, check_backend_contract, family_contract_arch


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name, device", backend_cases())
def test_backend_contract(name, device, family):
    """Every backend on every model family: encoder-decoder (encoder, decoder steps) and
    decoder-only (prefill, decode steps), the logits of the last step."""
    check_backend_contract(name, device, family_contract_arch(family))


def test_shipped_backends_are_registered_with_cpu():
    assert {"onnxruntime", "torch"} <= set(BACKENDS)
    assert "cpu" in available()["onnxruntime"] and "cpu" in available()["torch"]


def test_unknown_backend_or_missing_device_is_a_user_error():
    with pytest.raises(UserError, match="unknown backend"):
        get_backend("nope")
    with pytest.raises(UserError, match="no device"):
        get_backend("onnxruntime", "tpu")
    if "cuda" not in available()["torch"]:
        with pytest.raises(UserError, match="no device 'cuda'"):
            get_backend("torch", "cuda")


def test_a_new_backend_is_an_addition(monkeypatch):
    """Registering a subclass is all it takes (this is how the Triton backend plugs in)."""
    from moenas.profiler.backends import TorchBackend

    monkeypatch.setitem(BACKENDS, "torch-copy", BACKENDS["torch"])

    @register_backend
    class TorchCopy(TorchBackend):
        name = "torch-copy"

    assert isinstance(get_backend("torch-copy", "cpu"), Backend)
    for family in FAMILIES:
        check_backend_contract("torch-copy", "cpu", family_contract_arch(family))
    BACKENDS.pop("torch-copy")


def test_triton_backend_is_registered_and_refused_without_a_gpu():
    import torch

    from moenas.profiler.backends import BACKENDS, TritonBackend

    assert BACKENDS["triton"] is TritonBackend and TritonBackend.moe_backend == "triton"
    if not torch.cuda.is_available():
        assert TritonBackend.available_devices() == ()
        with pytest.raises(UserError, match="cuda|device"):
            get_backend("triton", "cuda")


def test_expert_counts_are_the_reference_runs_own_after_torch_timed_the_same_model():
    """The torch backend times the workload's own model; the reference run read afterwards must
    count its own tokens (every routed token once per top-k, per decoder layer and step), not
    the last timed step's on top."""
    from moenas.profiler.backends import get_backend
    from moenas.profiler.testing import CONTRACT_PROTOCOL, contract_arch
    from moenas.profiler.workload import make_workload

    arch = contract_arch()
    fresh = make_workload(arch, CONTRACT_PROTOCOL).reference()["expert_counts"]
    w = make_workload(arch, CONTRACT_PROTOCOL)
    prepared = get_backend("torch", "cpu").prepare(w)
    prepared.step()
    prepared.close()
    counts = w.reference()["expert_counts"]
    assert counts == fresh
    p = CONTRACT_PROTOCOL
    for key, per_expert in counts.items():
        if key.startswith("decoder."):
            assert sum(per_expert) == p.decoder_steps * p.decoder_batch * arch.top_k
