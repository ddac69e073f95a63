"""The service's endpoints, one router per resource; ``anomalens.service.app`` wires them together."""
