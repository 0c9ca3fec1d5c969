"""Data formats, validated reading, conversion and collation."""

from rlhfkit.data.io import DataError, DataFile, read_records
from rlhfkit.data.schema import Comparison, Generations, PreferencePair, Ranking, SFTRecord

__all__ = [
    "Comparison",
    "DataError",
    "DataFile",
    "Generations",
    "PreferencePair",
    "Ranking",
    "SFTRecord",
    "read_records",
]
