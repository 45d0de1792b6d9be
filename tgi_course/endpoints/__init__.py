"""A local Inference Endpoints control plane that the unchanged huggingface_hub client talks to.

``use_local_endpoints()`` is all a notebook needs: after it, ``huggingface_hub.create_inference_endpoint``
starts a local Messages API server instead of a cloud GPU. Importing this package is cheap (no torch,
no FastAPI): those load when a control plane starts.

Modules, one concern each: :mod:`.spec` (payload -> what to run), :mod:`.records` (state and the
wire JSON), :mod:`.store` (disk), :mod:`.process` (one server process), :mod:`.availability` (offline
models), :mod:`.supervisor` (lifecycle), :mod:`.proxy` (the endpoint URL), :mod:`.api` (REST routes),
:mod:`.control_plane` (the server thread), :mod:`.hub` (redirecting huggingface_hub).
"""

from .control_plane import LocalEndpoints
from .hub import use_local_endpoints, use_real_endpoints
from .settings import ControlPlaneSettings

__all__ = ["ControlPlaneSettings", "LocalEndpoints", "use_local_endpoints", "use_real_endpoints"]
