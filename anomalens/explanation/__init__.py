"""Plain-language explanations of :class:`~anomalens.postprocessing.findings.Findings`.

The default explainer (:mod:`anomalens.explanation.offline`) needs no model: it turns the measured findings
into sentences and answers AnomalyGPT's standard questions by simple keyword rules.
"""

from anomalens.explanation.offline import answer, explain

__all__ = ["answer", "explain"]
