"""The per-family registries of search/ and the CLI: each knows every model family
(tests/arch/test_family.py checks the lower floors'), and each family gets its own part, as the
branches they replaced did."""

import pytest
import torch
from micro_spaces import micro, micro_lm
from registries import family_registries, package_modules

from moenas.arch import LMSearchSpace, SearchSpace, UserError
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER
from moenas.arch.lm_model import CausalLM, build_lm_model
from moenas.arch.model import SubTransformer, build_model
from moenas.profiler.onnx_export import export_arch
from moenas.profiler.onnx_export_lm import export_lm, exporter_for
from moenas.search.deploy import DEPLOYMENTS, TRANSLATION
from moenas.search.lm_deploy import LM_DEPLOYMENT
from moenas.search.supernet import SUPERNETS, LMSuperNet, SuperNet, model_class
from moenas.search.train_config import TrainConfig
from moenas.search.train_data import check_corpus_for
from moenas.search.trainer import build_standalone

SPACES = {ENCODER_DECODER: SearchSpace.from_dict(micro()), DECODER_ONLY: LMSearchSpace.from_dict(micro_lm())}


def test_every_search_and_cli_registry_knows_every_family():
    """Adding a family = registering it in each of these; this names the registries that lack it."""
    registries = family_registries(package_modules("moenas.search", "moenas.commands"))
    short = {name.rsplit(".", 1)[1] for name in registries}
    assert {"SUPERNETS", "DEPLOYMENTS", "MODEL_NAMES", "LABEL_SMOOTHING", "TRAIN_DATA", "EVAL_SCORES"} <= short
    assert {name: r.missing() for name, r in registries.items() if r.missing()} == {}


def test_each_family_gets_its_own_part():
    assert SUPERNETS.for_family(ENCODER_DECODER) is SuperNet and SUPERNETS.for_family(DECODER_ONLY) is LMSuperNet
    assert model_class(ENCODER_DECODER) is SubTransformer and model_class(DECODER_ONLY) is CausalLM
    assert (
        DEPLOYMENTS.for_family(ENCODER_DECODER) is TRANSLATION and DEPLOYMENTS.for_family(DECODER_ONLY) is LM_DEPLOYMENT
    )
    assert exporter_for(SPACES[ENCODER_DECODER].smallest()) is export_arch
    assert exporter_for(SPACES[DECODER_ONLY].smallest()) is export_lm
    assert TrainConfig().smoothing_for(ENCODER_DECODER) == 0.1 and TrainConfig().smoothing_for(DECODER_ONLY) == 0.0
    assert TrainConfig(label_smoothing=0.2).smoothing_for(DECODER_ONLY) == 0.2
    with pytest.raises(UserError, match="a language model reads 'default'"):
        check_corpus_for(DECODER_ONLY, "gettext")


@pytest.mark.parametrize("family, build", [(ENCODER_DECODER, build_model), (DECODER_ONLY, build_lm_model)])
def test_a_standalone_model_is_built_as_its_family_builds_it(family, build):
    """build_standalone (the family's model class, seeded) gives the very weights of the
    family's builder: a standalone run starts where it always did."""
    arch = SPACES[family].largest()
    ours, theirs = build_standalone(arch, seed=3, dropout=0.1), build(arch, seed=3, dropout=0.1)
    assert type(ours) is type(theirs) is model_class(family)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    assert [m.p for m in ours.modules() if isinstance(m, torch.nn.Dropout)] == [
        m.p for m in theirs.modules() if isinstance(m, torch.nn.Dropout)
    ]
