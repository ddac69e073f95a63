"""ONNX export of a detector's inference network, and inference through ONNX Runtime.

The exported graph maps a [B,3,S,S] batch in [0,1] to [B,S,S] anomaly maps, exactly what the detector's
``_score_views`` computes in PyTorch; views, tiling, thresholds and findings stay in Python, so the two
runtimes give the same predictions up to float rounding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ONNX_FILE = "model.onnx"
OPSET = 17


def export_onnx(module: torch.nn.Module, image_size: int, path: str | Path) -> Path:
    """Write ``module`` as an ONNX graph with a dynamic batch dimension."""
    # torch's exporter needs the onnx package, and says so only after the export, in an error of its own
    import onnx  # noqa: F401

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    example = torch.rand(2, 3, image_size, image_size)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["maps"],
            dynamic_axes={"images": {0: "batch"}, "maps": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


class OnnxScorer:
    """Runs an exported graph with ONNX Runtime on the CPU: [B,3,S,S] tensor -> [B,S,S] tensor."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.set_denormal_as_zero", "1")  # see base.flush_denormals
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(["maps"], {"images": images})[0])
