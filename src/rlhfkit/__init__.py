"""rlhfkit: classic RLHF end to end, testable offline on a CPU."""

__version__ = "0.1.0"
