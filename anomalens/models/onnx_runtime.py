"""ONNX export of a detector's inference network, and inference through ONNX Runtime.

The exported graph maps a [B,3,S,S] batch in [0,1] to [B,S,S] anomaly maps, exactly what the detector's
``_score_views`` computes in PyTorch; views, tiling, thresholds and findings stay in Python, so the two
runtimes give the same predictions up to float rounding.

A graph carries, in its metadata, the fingerprint of the detector state it was exported from, so that a graph
left beside a model that has since changed (a refit, a new version) is recognised as stale and exported again.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

ONNX_FILE = "model.onnx"
OPSET = 17
FINGERPRINT_KEY = "anomalens_state"

logger = logging.getLogger(__name__)


def onnx_available() -> bool:
    """Whether both packages of the ``onnx`` extra import (the exporter and the runtime)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_graph(module: torch.nn.Module, image_size: int, fingerprint: str = "") -> bytes:
    """``module`` as a serialised ONNX graph with a dynamic batch dimension, ``fingerprint`` in its metadata."""
    # torch's exporter needs the onnx package, and says so only after the export, in an error of its own
    import onnx

    module = module.eval().cpu()
    example = torch.rand(2, 3, image_size, image_size)
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # traced at the model's one input size: that sizes become constants is what the tracer warns of, and meant
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["images"],
            output_names=["maps"],
            dynamic_axes={"images": {0: "batch"}, "maps": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load_model_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, {FINGERPRINT_KEY: fingerprint})
    return graph.SerializeToString()


def write_whole(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` through a file of its own beside it, renamed over ``path``: a reader, or another
    process writing the same path, sees the old file or a new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class OnnxScorer:
    """Runs an exported graph (a file, or its bytes) with ONNX Runtime on the CPU: [B,3,S,S] tensor -> the graph's
    output (anomaly maps [B,S,S] for a detector's graph). Its threads spin between parallel sections unless
    ``spinning`` is False: faster for a graph that does most of the work, slower for PyTorch work run between its
    calls, whose threads they take the cores from (bench/results/ort_spinning.md)."""

    def __init__(self, graph: str | Path | bytes, threads: int | None = None, spinning: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.set_denormal_as_zero", "1")  # see base.flush_denormals
        source = graph if isinstance(graph, bytes) else str(graph)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the state the graph was exported from; ``None`` for a graph exported without one."""
        return self.session.get_modelmeta().custom_metadata_map.get(FINGERPRINT_KEY)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(["maps"], {"images": images})[0])


def matching_scorer(path: Path, fingerprint: str, threads: int | None = None) -> OnnxScorer | None:
    """A scorer of the graph at ``path`` when there is one, it reads, and it was exported from the state that
    ``fingerprint`` names; else ``None`` (the caller exports again)."""
    import onnxruntime  # noqa: F401  a missing runtime is the caller's error, not an unreadable graph

    if not path.is_file():
        return None
    try:
        scorer = OnnxScorer(path, threads)
    except Exception as error:  # ONNX Runtime's own error classes (InvalidProtobuf, Fail, ...) derive from Exception
        logger.warning("%s cannot be read (%s); exporting the model again", path, error)
        return None
    if scorer.fingerprint != fingerprint:
        logger.info("%s was exported from another state of the model; exporting it again", path)
        return None
    return scorer


class CpuGraphModule:
    """Calls ``module`` ([B,3,S,S] tensor -> one tensor) through ONNX Runtime where the ``onnx`` extra is installed
    and ``device`` is the CPU, exported at ``image_size`` on the first call; in PyTorch otherwise, and also when the
    export or the runtime fails (with a warning that says why). For a frozen network that runs many times within
    one process, such as a backbone during a fit (bench/results/fit_scale_ort.md measured it). Its threads do not
    spin between calls (``spinning``), since PyTorch works between them."""

    spinning = False

    def __init__(self, module: torch.nn.Module, image_size: int, device: torch.device):
        self.module = module
        self.image_size = image_size
        self.device = device
        self.scorer: OnnxScorer | None = None
        self.exported = self._torch_only()

    def _torch_only(self) -> bool:
        return self.device.type != "cpu" or not onnx_available()

    def __getstate__(self) -> dict:
        # a runtime session neither copies nor pickles: a copy exports a graph of its own when it is first called
        return {**self.__dict__, "scorer": None, "exported": self._torch_only()}

    @property
    def runtime(self) -> str:
        """Which runtime computes the module: "onnx" once the graph runs, else "torch"."""
        return "onnx" if self.scorer is not None else "torch"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.exported:
            self.exported = True
            try:
                self.scorer = OnnxScorer(onnx_graph(self.module, self.image_size), spinning=self.spinning)
            except Exception as error:  # whatever the exporter or the runtime raise, PyTorch still computes it
                logger.warning("%s runs in PyTorch: %s: %s", type(self.module).__name__, type(error).__name__, error)
        if self.scorer is not None:
            return self.scorer(batch)
        return self.module(batch.to(self.device))
