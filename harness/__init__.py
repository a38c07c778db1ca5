"""The mechanism of seqbench: registries, configuration, training, checkpoints, results."""
