"""`moenas kernels` compares the kernels with the reference on this device."""

import json

from moenas.cli import main


def test_kernels_check_passes_and_reports_json(capsys):
    assert main(["kernels", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cases"] and all(c["ok"] for c in d["cases"])
    assert any(c["idle_expert"] for c in d["cases"]) and {c["top_k"] for c in d["cases"]} == {1, 2}


def test_kernels_refuses_bf16_on_cpu(capsys):
    assert main(["kernels", "--device", "cpu", "--dtype", "bfloat16"]) == 2
    assert "bf16" in capsys.readouterr().err
