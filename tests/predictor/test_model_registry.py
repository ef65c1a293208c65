"""The model registry: one registration per model, which names, make_core and persistence all read."""

import subprocess
import sys

import numpy as np
import pytest
import skops.io as sio

from moenas.arch import SearchSpace, UserError
from moenas.predictor import names, persist
from moenas.predictor.features import GROUPS, ArchFeatures
from moenas.predictor.models import MODEL_REGISTRY, check_model_name, make_core
from moenas.predictor.synthetic import DEVICES, true_latency

SMALL = {
    "hat-mlp": {"hidden_layer_sizes": (8,), "max_iter": 20},
    "automoe-mlp": {"hidden_layer_sizes": (8,), "steps": 40, "learning_rate_init": 1e-3},
    "gbt": {"n_estimators": 10},
    "rf": {"n_estimators": 10},
    "hybrid": {"n_estimators": 10},
    "stack": {"candidates": ("flops-linear", "gbt"), "folds": 3},
    "auto": {"candidates": ("flops-linear",), "folds": 3},
}


def test_the_names_the_cli_lists_are_the_registered_models():
    """names.MODELS is what --help shows without importing scikit-learn; it must not drift."""
    assert names.MODELS == tuple(MODEL_REGISTRY)


def test_the_names_module_needs_no_scikit_learn():
    code = "import sys, moenas.predictor.names; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_unknown_model_is_one_user_error_naming_the_choices():
    assert check_model_name("gbt") == "gbt"
    with pytest.raises(UserError, match=r"unknown model 'nope' \(choose from flops-linear, hat-mlp, .*auto\)"):
        check_model_name("nope")
    with pytest.raises(UserError, match="unknown model 'nope'"):
        make_core("nope")


@pytest.mark.parametrize("space", ["tiny", "lm-tiny"])  # a space of each model family
@pytest.mark.parametrize("name", list(MODEL_REGISTRY))
def test_a_fitted_core_holds_only_trusted_types(name, space):
    """Each registration names the types its fitted core holds: a predictor file of it saves and
    loads, whichever family's features it was fitted on."""
    archs = SearchSpace.load(space).sample_n(30, seed=0)
    feats = ArchFeatures(space=space, groups=GROUPS).fit(archs)
    y = true_latency(archs, DEVICES["a"])["total"]
    core = make_core(name, 0, feats.feature_names_, **SMALL.get(name, {})).fit(feats.transform(archs), y)
    assert set(sio.get_untrusted_types(data=sio.dumps(core))) <= set(persist.trusted_types())
    assert np.all(core.predict(feats.transform(archs)) > 0)
