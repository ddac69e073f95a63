from anomalens.models.patchcore.detector import PatchCore

__all__ = ["PatchCore"]
