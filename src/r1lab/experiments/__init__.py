"""Experiments: arms, seeds, sweeps over one recipe, stages shared by config hash, paired statistics."""
