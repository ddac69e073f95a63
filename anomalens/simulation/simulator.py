"""The dispatcher: :func:`simulate` one anomaly of a named kind into a good image.

Guarantees for every kind (tested):

* the result is float32 ``(H, W, 3)`` in ``[0, 1]``; a grey input (equal channels) gives a grey result;
* every pixel outside ``mask`` is bit-identical to the input, and the mask is where the image changed
  (hard pastes: the pasted region; blended kinds: the pixels that moved by more than 0.03);
* the mask is never empty and at least 20 of its pixels changed visibly;
* the same ``rng`` state gives a byte-identical result.

If a kind cannot produce a visible change in this image within its bounded retries (e.g. seamless cloning
of look-alike patches on a featureless surface), the dispatcher falls back to ``stain``, then
``texture``; ``kind`` then names what was actually made and ``params["requested_kind"]`` what was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anomalens.simulation._common import as_image, is_gray, json_safe
from anomalens.simulation.cutpaste import simulate_cutpaste, simulate_scar
from anomalens.simulation.nsa import simulate_nsa
from anomalens.simulation.stain import simulate_stain
from anomalens.simulation.texture import simulate_texture

__all__ = ["KINDS", "SimulatedAnomaly", "simulate"]

# (image, rng, source) -> (result, mask, params), or None when no draw changed the image visibly
Generator = Callable[..., "tuple[np.ndarray, np.ndarray, dict] | None"]

_GENERATORS: dict[str, Generator] = {
    "nsa": simulate_nsa,
    "cutpaste": simulate_cutpaste,
    "scar": simulate_scar,
    "texture": simulate_texture,
    "stain": simulate_stain,
}
#: Anomaly kinds :func:`simulate` knows.
KINDS: tuple[str, ...] = tuple(_GENERATORS)
_FALLBACKS = ("stain", "texture")


@dataclass(eq=False)  # arrays inside: compare fields explicitly
class SimulatedAnomaly:
    """A good image with one simulated defect: ``image`` float32 ``(H, W, 3)`` RGB in ``[0, 1]``, ``mask`` bool
    ``(H, W)``, True where the image was changed (the ground truth), ``kind`` the kind that was made (see
    :data:`KINDS`) and ``params`` a JSON-safe description of the draw (sizes, positions, blend mode, ...)."""

    image: np.ndarray
    mask: np.ndarray
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def simulate(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    source: np.ndarray | None = None,
) -> SimulatedAnomaly:
    """Put one simulated anomaly of ``kind`` into a copy of the good ``image``.

    ``image`` is float32 ``(H, W, 3)`` RGB in ``[0, 1]`` (``uint8`` and ``(H, W)`` are accepted), at least 16
    pixels in each side. ``kind`` is one of :data:`KINDS`: ``"nsa"`` (Poisson-blended patch of ``source``),
    ``"cutpaste"``, ``"scar"`` (hard pastes of the image itself), ``"texture"`` (DRAEM-style Perlin region of
    foreign texture), ``"stain"`` (smooth dark/bright blob or faint scratch). ``rng`` is the only source of
    randomness: the same generator state gives a byte-identical result. ``source`` is another good image, the
    donor for ``nsa`` (and optionally ``texture``); ``None`` makes ``nsa`` take its patch from ``image``
    itself; the other kinds ignore it.

    An unknown ``kind``, a bad array shape or an image or source smaller than 16 pixels in a side raise
    ``ValueError``; an ``rng`` that is not a ``numpy.random.Generator`` raises ``TypeError``.
    """
    if kind not in _GENERATORS:
        raise ValueError(f"unknown anomaly kind {kind!r}; choose from: {', '.join(KINDS)}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {type(rng).__name__}"
        )
    good = as_image(image, "image")
    donor = None if source is None else as_image(source, "source image")
    gray = is_gray(good)

    tried: list[str] = []
    for name in (kind, *(k for k in _FALLBACKS if k != kind)):
        outcome = _GENERATORS[name](good, rng, donor)
        if outcome is None:
            tried.append(name)
            continue
        result, mask, params = outcome
        if gray:  # belt and braces: generators already keep grey images grey
            result = np.repeat(result[:, :, :1], 3, axis=2)
        params = dict(params)
        if tried:
            params["requested_kind"] = kind
            params["fallback_from"] = tried
        return SimulatedAnomaly(
            image=np.ascontiguousarray(result, dtype=np.float32),
            mask=np.ascontiguousarray(mask, dtype=bool),
            kind=name,
            params=json_safe(params),
        )
    raise RuntimeError(
        f"could not make a visible simulated anomaly in this {good.shape[0]}x{good.shape[1]} image "
        f"(tried {', '.join(tried)})"
    )
