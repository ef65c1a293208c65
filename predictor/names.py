"""Model and target names, importable without scikit-learn (the CLI's --help needs only these)."""

from moenas.arch.family import all_targets

# the models registered in predictor/models.py (register_model), in their order; a test holds them equal
MODELS = ("flops-linear", "hat-mlp", "automoe-mlp", "gbt", "rf", "hybrid", "stack", "auto")
TARGETS = all_targets()
DESIGNS = ("random", "space-filling", "uncertainty")  # moenas profile --design: predictor/design.py
