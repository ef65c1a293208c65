"""RayRunner on a local 2-CPU Ray cluster started once for the module: the same fitness values as
the in-process runner on a tiny supernet, an actor killed mid-batch retried, a worker that keeps
dying stopped with one line, `moenas search --runner ray` end to end, and, without Ray, the
one-line error naming the extra (that test runs whether Ray is installed or not)."""

import functools
import os
import sys

import numpy as np
import pytest
from toy_corpus import synthetic_pairs, write_parallel_dir  # tests/helpers

from moenas.arch import SearchSpace, UserError
from moenas.cli import main
from moenas.data.profiles import shipped
from moenas.predictor.api import fit_predictor
from moenas.predictor.dataset import load_dataset
from moenas.search.fitness import SupernetFitness
from moenas.search.fitness_runners import InProcessRunner
from moenas.search.search_job import fitness_factory
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

TINY = SearchSpace.load("tiny")
VALID = 8  # validation sentences per fitness call: small, still a real loss


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rayrunner")
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(300, seed=2))
    ckpt = root / "supernet.pt"
    train(
        TrainConfig(
            space="tiny",
            corpus=str(corpus),
            cache_dir=str(root / "cache"),
            steps=2,
            max_tokens=256,
            max_len=24,
            warmup=1,
            valid_sentences=VALID,
            bleu_sentences=0,
            progress=False,
            device="cpu",
        ),
        ckpt,
        log=lambda m: None,
    )
    ds = load_dataset([shipped("tiny-cpu-ort")], "total")
    pred, _ = fit_predictor(ds, "flops-linear", folds=3, with_learning_curve=False)
    pred.save(root / "predictor")
    return {"ckpt": str(ckpt), "pred": str(root / "predictor"), "median": float(np.median(ds.y))}


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors cannot import this test module
    yield ray
    ray.shutdown()


class DiesOnce:
    """A fitness whose process exits on the first call made anywhere (a marker file decides),
    then behaves like the real one: an actor lost mid-batch, once."""

    def __init__(self, marker: str, inner):
        self.marker, self.fitness = marker, inner()

    def __call__(self, archs):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return self.fitness(archs)
        os._exit(1)


def always_dies():
    os._exit(1)


def reference(env, archs):
    return InProcessRunner().evaluate(SupernetFitness(env["ckpt"], VALID), archs)


def ray_runner(factory, **kw):
    from moenas.search.ray_runner import RayRunner

    return RayRunner(factory, **kw)


def test_ray_runner_equals_in_process_and_leaves_the_cluster_it_joined(ray, env):
    archs = TINY.sample_n(7, seed=3)
    runner = ray_runner(fitness_factory(env["ckpt"], VALID), workers=2, batch_size=2)
    try:
        values = runner.evaluate(None, archs)
        assert runner.evaluate(None, archs[::-1]) == values[::-1]  # order follows the input, not the actors
    finally:
        runner.close()
    assert values == reference(env, archs)
    assert ray.is_initialized()  # the module's cluster: not this runner's to shut down


def test_an_actor_killed_mid_batch_is_retried_and_the_values_are_the_same(ray, env, tmp_path):
    marker = tmp_path / "died"
    archs = TINY.sample_n(6, seed=4)
    runner = ray_runner(
        functools.partial(DiesOnce, str(marker), fitness_factory(env["ckpt"], VALID)), workers=2, batch_size=3
    )
    try:
        values = runner.evaluate(None, archs)
    finally:
        runner.close()
    assert marker.exists()  # an actor did die
    assert values == reference(env, archs)


def test_a_worker_that_keeps_dying_stops_the_search_with_one_line(ray):
    runner = ray_runner(always_dies, workers=1, retries=1)
    try:
        with pytest.raises(UserError, match="died 2 times") as e:
            runner.evaluate(None, TINY.sample_n(2, seed=5))
    finally:
        runner.close()
    assert "\n" not in str(e.value)


def search_args(env, out, *extra):
    return [
        "search",
        "--space",
        "tiny",
        "--supernet",
        env["ckpt"],
        "--predictor",
        env["pred"],
        "--max-latency-ms",
        str(env["median"]),
        "--population",
        "8",
        "--parents",
        "3",
        "--mutations",
        "3",
        "--crossovers",
        "2",
        "--iterations",
        "1",
        "--seed",
        "1",
        "--no-measure",
        "--bleu-sentences",
        "0",
        "--out",
        str(out),
        *extra,
    ]


def test_search_with_ray_runner_equals_in_process_and_resumes(ray, env, tmp_path, capsys):
    a, b = tmp_path / "inproc", tmp_path / "ray"
    assert main(search_args(env, a)) == 0
    assert main(search_args(env, b, "--runner", "ray", "--workers", "2")) == 0, capsys.readouterr().err
    assert (b / "evaluated.csv").read_text() == (a / "evaluated.csv").read_text()
    assert main(search_args(env, b, "--runner", "ray", "--workers", "2", "--resume")) == 0
    assert (b / "best_arch.json").read_text() == (a / "best_arch.json").read_text()
    assert ray.is_initialized()


@pytest.mark.parametrize(
    "flags, needle",
    [
        (("--runner", "ray"), "pip install 'moenas[ray]'"),
        (("--ray-address", "127.0.0.1:6379"), "--ray-address needs --runner ray"),
    ],
)
def test_ray_flags_without_ray_are_one_line_and_exit_2(env, tmp_path, capsys, monkeypatch, flags, needle):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as on a machine without it
    out = tmp_path / "s"
    assert main(search_args(env, out, *flags)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # refused before any work


def test_an_address_where_nothing_listens_is_one_line_at_once():
    import socket

    from moenas.arch.ray_cluster import check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"--ray-address 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}", "--ray-address", timeout_s=2)
    check_reachable("auto", "--ray-address")  # left to Ray
