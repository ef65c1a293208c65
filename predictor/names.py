"""Model and target names, importable without scikit-learn (the CLI's --help needs only these)."""
MODELS = ("flops-linear", "hat-mlp", "automoe-mlp", "gbt", "rf", "hybrid", "stack", "auto")
TARGETS = ("total", "encoder", "decoder")
