"""r1lab: cold-start SFT, then RL with verifiable rewards — recipes, evaluation and comparison."""

__version__ = "0.1.0"
