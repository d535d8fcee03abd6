"""Data: the canonical dataset, the built-in synthetic benchmark, the Polyvore-U reader, sampling."""

from .schema import (CATEGORIES, PROTOCOLS, SPLITS, ArrayImages, CandidateSet, DatasetError,
                     OutfitDataset, split_sizes)

__all__ = ["CATEGORIES", "PROTOCOLS", "SPLITS", "ArrayImages", "CandidateSet", "DatasetError",
           "OutfitDataset", "split_sizes"]
