"""Defect types in the user's own taxonomy, learned from a few labelled examples per type.

A region (an image plus a boolean mask of the defect) is turned into a fixed-length vector
(:mod:`~anomalens.explanation.taxonomy.embedding`); a :class:`Taxonomy`
(:mod:`~anomalens.explanation.taxonomy.classifier`) keeps the vectors of the labelled examples and names a new
region by the nearest type, or "unknown" when it is further from every type than that type's own examples are
from each other. The examples come from a folder per type (:mod:`~anomalens.explanation.taxonomy.folders`), the
regions to name from a prediction's findings (:mod:`~anomalens.explanation.taxonomy.regions`), and a learned
taxonomy is kept as two files (:mod:`~anomalens.explanation.taxonomy.persistence`).
"""

from anomalens.explanation.taxonomy.classifier import UNKNOWN, Taxonomy, load_taxonomy
from anomalens.explanation.taxonomy.embedding import LAYERS, get_extractor, region_embedding, shape_descriptors
from anomalens.explanation.taxonomy.folders import folder_examples
from anomalens.explanation.taxonomy.regions import region_masks, strongest_region

__all__ = [
    "LAYERS",
    "Taxonomy",
    "UNKNOWN",
    "folder_examples",
    "get_extractor",
    "load_taxonomy",
    "region_embedding",
    "region_masks",
    "shape_descriptors",
    "strongest_region",
]
