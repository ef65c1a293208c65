"""`moenas space ...` through the CLI, including bad input -> one line on stderr, exit 2."""

import json
import subprocess
import sys

import pytest

from moenas.arch import Arch, SearchSpace
from moenas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_prints_valid_json_lines(capsys):
    code, out, _ = run(capsys, "space", "sample", "--space", "automoe-wmt", "--n", "3", "--seed", "7")
    assert code == 0
    archs = [Arch.from_json(line) for line in out.splitlines()]
    assert len(archs) == 3
    space = SearchSpace.load("automoe-wmt")
    assert all(space.contains(a) for a in archs)
    _, again, _ = run(capsys, "space", "sample", "--space", "automoe-wmt", "--n", "3", "--seed", "7")
    assert again == out


def test_validate_and_stats(tmp_path, capsys):
    arch = SearchSpace.load("tiny").sample(2)
    f = tmp_path / "a.json"
    f.write_text(arch.to_json(indent=2))
    assert run(capsys, "space", "validate", str(f), "--space", "tiny")[0] == 0
    code, _, err = run(capsys, "space", "validate", str(f), "--space", "automoe-wmt")
    assert code == 2 and "embed_dim" in err
    code, out, _ = run(capsys, "space", "stats", str(f), "--json")
    d = json.loads(out)
    assert (
        code == 0 and d["arch_id"] == arch.arch_id and d["flops_total"] > 0 and d["params_active"] <= d["params_total"]
    )
    code, out, _ = run(capsys, "space", "stats", str(f))
    assert code == 0 and "encoder" in out and "GFLOPs" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["space", "stats", "/no/such/file.json"], "no such file"),
        (["space", "sample", "--space", "nope"], "unknown space"),
        (["space", "sample", "--n", "0"], "--n"),
        (["space", "validate", "{bad}"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_malformed_json_file(tmp_path, capsys):
    f = tmp_path / "bad.json"
    f.write_text('{"encoder": ')
    code, _, err = run(capsys, "space", "stats", str(f))
    assert code == 2 and "malformed" in err and "Traceback" not in err


def test_outside_space_through_a_real_process_has_no_traceback(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(SearchSpace.load("tiny").sample(0).to_json())
    p = subprocess.run(
        [sys.executable, "-m", "moenas", "space", "stats", str(f), "--space", "hat-wmt"], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert "outside space" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_every_command_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(["space", "sample", "--help"])
    assert e.value.code == 0 and "--seed" in capsys.readouterr().out


def test_public_api_names_resolve():
    import moenas

    for name in moenas.__all__:
        assert getattr(moenas, name) is not None, name


def test_validate_without_a_space_names_the_spaces_that_hold_each_arch(tmp_path, capsys):
    wmt, tiny = SearchSpace.load("automoe-wmt").sample(3), SearchSpace.load("tiny").sample(4)
    f = tmp_path / "archs.jsonl"
    f.write_text(wmt.to_json() + "\n" + tiny.to_json() + "\n")
    code, out, err = run(capsys, "space", "validate", str(f))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "automoe-wmt" in lines[0] and "tiny" not in lines[0] and lines[1].endswith("in tiny")
    odd = json.loads(tiny.to_json())
    odd["encoder"]["embed_dim"] = 96  # in no shipped space
    f.write_text(json.dumps(odd) + "\n")
    code, out, err = run(capsys, "space", "validate", str(f))
    assert code == 2 and "in no shipped space; closest 'tiny'" in err and "embed_dim" in err and err.count("\n") == 1
