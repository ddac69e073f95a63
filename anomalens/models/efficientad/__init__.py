from anomalens.models.efficientad.detector import EfficientAD

__all__ = ["EfficientAD"]
