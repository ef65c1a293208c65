"""`moenas space sample|stats|info|validate` on a decoder-only space and arch."""

import json

import pytest
import yaml

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


def _files(tmp_path):
    """An arch of each family, an arch and a space YAML naming a family moenas does not know, and
    an output path."""
    lm, ed = SearchSpace.load("lm-tiny").sample(0), SearchSpace.load("tiny").sample(0)
    files = {"lm": tmp_path / "lm.json", "ed": tmp_path / "ed.json"}
    files["lm"].write_text(lm.to_json())
    files["ed"].write_text(ed.to_json())
    files["odd_arch"] = tmp_path / "odd.json"
    files["odd_arch"].write_text(json.dumps({**ed.to_dict(), "family": "encoder-only"}))
    files["odd_space"] = tmp_path / "odd.yaml"
    files["odd_space"].write_text(yaml.safe_dump({**SearchSpace.load("tiny").to_dict(), "family": "encoder-only"}))
    files["out"] = tmp_path / "x.parquet"
    return files


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["space", "stats", "--space", "tiny", "lm"], "outside space 'tiny': family: 'decoder-only' is not allowed"),
        (["space", "stats", "--space", "lm-tiny", "ed"], "family: 'encoder-decoder' is not allowed"),
        (["profile", "--space", "tiny", "--archs", "lm", "--out", "out"], "family: 'decoder-only'"),
        (["space", "stats", "odd_arch"], "family 'encoder-only' is not a model family (known: encoder-decoder, "),
        (["space", "info", "--space", "odd_space"], "family 'encoder-only' is not a model family"),
        (["space", "validate", "--space", "odd_space", "ed"], "family 'encoder-only' is not a model family"),
    ],
)
def test_an_arch_or_space_of_another_or_an_unknown_family_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    files = _files(tmp_path)
    code, out, err = run(capsys, *(files.get(a, a) for a in argv))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not files["out"].exists()
