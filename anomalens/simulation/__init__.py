"""Simulated anomalies: synthetic defects in good images, for threshold calibration and synthetic test sets.

Detectors learn from defect-free images only; to pick or check a threshold without real defects, put
simulated ones into held-out good images::

    import numpy as np
    from anomalens.simulation import simulate
    sim = simulate(good, "nsa", np.random.default_rng(0), source=other_good)
    sim.image, sim.mask, sim.kind, sim.params

Kinds (:data:`KINDS`): ``nsa`` (Poisson-blended patch of another good image), ``cutpaste`` and ``scar``
(hard pastes of the image itself), ``texture`` (DRAEM-style Perlin region of foreign texture), ``stain``
(smooth dark/bright blob or faint scratch). :func:`write_simulated_dataset` writes a whole MVTec-layout set
and :func:`save_example_grid` a contact sheet.
"""

from anomalens.simulation.dataset import write_simulated_dataset
from anomalens.simulation.grid import example_grid, examples_from_folder, save_example_grid
from anomalens.simulation.shapes import SHAPES, blob_mask, ellipse_mask, polygon_mask, random_shape, scratch_mask
from anomalens.simulation.simulator import KINDS, SimulatedAnomaly, simulate
from anomalens.simulation.texture import fractal_noise, perlin_mask, perlin_noise

__all__ = [
    "KINDS",
    "SHAPES",
    "SimulatedAnomaly",
    "blob_mask",
    "ellipse_mask",
    "example_grid",
    "examples_from_folder",
    "fractal_noise",
    "perlin_mask",
    "perlin_noise",
    "polygon_mask",
    "random_shape",
    "save_example_grid",
    "scratch_mask",
    "simulate",
    "write_simulated_dataset",
]
