"""The supernet's vocabulary, importable without torch (`moenas train --help` lists these)."""

KINDS = ("slice", "mos")  # weight sharing: HAT/AutoMoE slices, or Mixture-of-Supernets
MOS_MODES = ("layer", "neuron")  # MoS: one mixing weight per bank and layer, or per output neuron too
MOS_INITS = ("copy", "independent")  # MoS banks start as copies of one another, or drawn independently
