"""Kernel configurations: defaults, tuned JSON lookup, the single fallback warning."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from moenas.moe_kernels import GemmConfig, MoEKernelConfig, get_config, override_config
from moenas.moe_kernels import config as cfgmod


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("MOENAS_MOE_CONFIG_DIR", str(tmp_path))
    cfgmod._reset_caches()
    yield tmp_path
    cfgmod._reset_caches()


def test_shape_class_buckets():
    assert cfgmod.shape_class(torch.bfloat16, 512, 1) == "bf16|D512|slots64"
    assert cfgmod.shape_class(torch.float16, 640, 3000) == "fp16|D640|slots4096"
    assert cfgmod.slot_bucket(10**7) == 32768
    with pytest.raises(ValueError):
        cfgmod.shape_class(torch.int8, 512, 1)


def test_missing_config_warns_once():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        a = get_config("Imaginary GPU 9000", torch.bfloat16, 512, 100)
        b = get_config("Imaginary GPU 9000", torch.bfloat16, 640, 20000)  # other class
        c = get_config("Imaginary GPU 9000", torch.float16, 512, 100)
    msgs = [str(w.message) for w in rec if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1 and "Imaginary GPU 9000" in msgs[0] and "tune_moe_kernels" in msgs[0]
    assert a == b == c == cfgmod.default_config(torch.bfloat16)


def test_cpu_uses_defaults_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_config(None, torch.float32, 32, 10) == cfgmod.default_config(torch.float32)


def test_tuned_file_exact_and_nearest(fresh):
    name = "Tuned GPU X"
    entry = {
        "up": {"block_m": 128, "num_warps": 8},
        "down": {"block_n": 64},
        "wgrad": {"block_r": 32},
        "ms": {"up": 0.1},
    }
    doc = {"device": name, "configs": {"bf16|D512|slots4096": entry}}
    cfgmod.device_config_path(name, fresh).write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # found: no warning
        exact = get_config(name, torch.bfloat16, 512, 3000)
        near = get_config(name, torch.bfloat16, 512, 16000)  # nearest bucket, same dtype and D
    for c in (exact, near):
        assert c.up.block_m == 128 and c.up.num_warps == 8 and c.up.block_k == 64
        assert c.down.block_n == 64 and c.wgrad.block_r == 32
    with pytest.warns(UserWarning):  # other D: no entry
        assert get_config(name, torch.bfloat16, 640, 3000) == cfgmod.default_config(torch.bfloat16)


def test_override_and_json_roundtrip():
    cfg = MoEKernelConfig(up=GemmConfig(block_m=16))
    assert cfgmod.config_from_json(cfgmod.config_to_json(cfg)) == cfg
    with override_config(cfg):
        assert get_config("Imaginary GPU 9000", torch.bfloat16, 512, 1) is cfg
