"""The inspection service (``anomalens serve``): FastAPI app, result store, web page. Needs the ``service`` extra."""

from anomalens.service.app import create_app
from anomalens.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
