"""`moenas space sample|stats|info|validate` on a decoder-only space and arch."""

import json

from moenas.arch import Arch, SearchSpace
from moenas.arch.arch import LMArch
from moenas.arch.protocol import LMProtocol
from moenas.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_prints_lm_archs_of_the_space(capsys):
    code, out, _ = run(capsys, "space", "sample", "--space", "lm-tiny", "--n", "3", "--seed", "7")
    archs = [Arch.from_json(line) for line in out.splitlines()]
    space = SearchSpace.load("lm-tiny")
    assert code == 0 and len(archs) == 3 and all(isinstance(a, LMArch) and space.contains(a) for a in archs)


def test_stats_costs_prefill_and_decode_under_the_lm_protocol(tmp_path, capsys):
    arch = SearchSpace.load("lm-tiny").sample(2)
    f = tmp_path / "a.json"
    f.write_text(arch.to_json(indent=2))
    code, out, _ = run(capsys, "space", "stats", f, "--space", "lm-tiny")
    assert code == 0 and "decoder-only" in out and "prompt 128 tokens, 32 greedy decode steps" in out
    assert [line.split()[0] for line in out.splitlines()[-3:]] == ["prefill", "decode", "total"]
    code, out, _ = run(capsys, "space", "stats", f, "--json", "--prompt-len", "64", "--decode-steps", "8")
    d = json.loads(out)
    assert code == 0 and d["protocol"] == LMProtocol(prompt_len=64, decode_steps=8).to_dict()
    assert d["arch_id"] == arch.arch_id and d["flops_total"] == d["flops_prefill"] + d["flops_decode"]


def test_a_protocol_flag_of_the_other_family_is_refused_in_one_line(tmp_path, capsys):
    lm, ed = tmp_path / "lm.json", tmp_path / "ed.json"
    lm.write_text(SearchSpace.load("lm-tiny").sample(0).to_json())
    ed.write_text(SearchSpace.load("tiny").sample(0).to_json())
    for f, flag in ((lm, "--beam"), (lm, "--src-len"), (ed, "--prompt-len"), (ed, "--decode-steps")):
        code, _, err = run(capsys, "space", "stats", f, flag, "3")
        assert code == 2 and flag in err and len(err.strip().splitlines()) == 1


def test_info_describes_the_one_stack(capsys):
    code, out, _ = run(capsys, "space", "info", "--space", "lm-small")
    assert code == 0 and "space lm-small (decoder-only)" in out and "encoder" not in out
    code, out, _ = run(capsys, "space", "info", "--space", "lm-tiny", "--json")
    d = json.loads(out)
    assert d["family"] == "decoder-only" and d["decoder"]["expert_sizes"] == [256, 512, 768] and "encoder" not in d


def test_validate_names_the_spaces_of_the_archs_own_family(tmp_path, capsys):
    lm, ed = SearchSpace.load("lm-tiny").sample(1), SearchSpace.load("tiny").sample(4)
    f = tmp_path / "mixed.jsonl"
    f.write_text(lm.to_json() + "\n" + ed.to_json() + "\n")
    code, out, err = run(capsys, "space", "validate", f)
    assert (
        code == 0
        and err == ""
        and out.splitlines()[0].endswith("in lm-tiny")
        and out.splitlines()[1].endswith("in tiny")
    )
    code, _, err = run(capsys, "space", "validate", f, "--space", "tiny")
    assert code == 2 and "family: 'decoder-only' is not allowed" in err
