"""Point the *unchanged* huggingface_hub client at the local control plane, and back.

huggingface_hub reads ``constants.INFERENCE_ENDPOINTS_ENDPOINT`` at every Inference Endpoints call, so
changing that one constant redirects create/get/list/update/pause/resume/scale_to_zero/delete. Three
more things need care offline:

- the default namespace comes from ``whoami``, a call to the Hub itself: it is answered locally too;
- the control plane's API and its protected endpoints accept one token, this user's own, made on first use
  and kept (mode 0600) in the state folder: it is set as ``HF_TOKEN`` while huggingface_hub is redirected,
  so every huggingface_hub call, ``get_token()`` and ``endpoint.client`` use it (a real Hugging Face token
  the learner may have is left alone, and restored by ``use_real_endpoints()``);
- with ``HF_HUB_OFFLINE=1`` huggingface_hub's HTTP client refuses every request, the local control
  plane included: its client factory is wrapped so that requests to the control plane's URL pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .control_plane import LocalEndpoints
from .store import StateDirBusy

_active: LocalEndpoints | None = None
_saved: dict[str, Any] | None = None


def use_local_endpoints(state_dir: str | Path | None = None, *, port: int | None = None, **settings: Any) -> LocalEndpoints:
    """Make huggingface_hub's Inference Endpoints functions deploy on this machine, offline.

    Starts a local control plane (or joins the one another Python session runs on the same state
    folder) and redirects huggingface_hub to it, with the control plane's token as ``HF_TOKEN``.
    Calling it again returns the same control plane.

    Args:
        state_dir: where endpoints are remembered (default ``~/.cache/tgi-course/endpoints``).
        port: the control plane's port (default: a free one).
        **settings: passed to :class:`LocalEndpoints` (e.g. ``minute_seconds``).

    Returns:
        The :class:`LocalEndpoints` control plane; ``use_real_endpoints()`` undoes everything.
    """
    if "token" in settings:
        raise TypeError(
            "use_local_endpoints() takes no token: the local control plane accepts only its own, which it makes on "
            "first use, keeps in its state folder and sets as HF_TOKEN (huggingface_hub.get_token() returns it)"
        )
    global _active
    if _active is not None and _active.running:
        if state_dir is None or Path(state_dir).expanduser() == _active.settings.state_dir:
            return _active
        use_real_endpoints()  # another state folder was asked for: switch control planes
    control_plane = LocalEndpoints(state_dir, port=port, **settings)
    try:
        control_plane.start()
    except StateDirBusy as busy:
        control_plane = LocalEndpoints.attach(busy.owner["url"], state_dir)
    _redirect_hub(control_plane.url or "", control_plane.token)
    _active = control_plane
    return control_plane


def use_real_endpoints() -> None:
    """Undo :func:`use_local_endpoints`: huggingface_hub talks to the real service again.

    The local control plane stops, and with it every local endpoint server; their records stay on
    disk and show as scaled to zero next time.
    """
    global _active, _saved
    if _saved is not None:
        from huggingface_hub import constants
        from huggingface_hub.hf_api import HfApi
        from huggingface_hub.utils import set_async_client_factory, set_client_factory

        constants.INFERENCE_ENDPOINTS_ENDPOINT = _saved["endpoint"]
        HfApi._inner_whoami = _saved["whoami"]
        set_client_factory(_saved["client_factory"])
        set_async_client_factory(_saved["async_client_factory"])
        _restore_env("HF_TOKEN", _saved["hf_token"])
        _saved = None
    if _active is not None:
        _active.stop()
        _active = None


def _redirect_hub(url: str, token: str) -> None:
    global _saved
    from huggingface_hub import constants
    from huggingface_hub.hf_api import HfApi
    from huggingface_hub.utils import _http, set_async_client_factory, set_client_factory

    if _saved is None:  # keep the originals of the first call only, so undo restores the real setup
        _saved = {
            "endpoint": constants.INFERENCE_ENDPOINTS_ENDPOINT,
            "whoami": HfApi.__dict__["_inner_whoami"],
            # Private in huggingface_hub, but reading it is the only way to keep a learner's own factory.
            "client_factory": getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory),
            "async_client_factory": getattr(_http, "_GLOBAL_ASYNC_CLIENT_FACTORY", _http.default_async_client_factory),
            "hf_token": os.environ.get("HF_TOKEN"),
        }
    constants.INFERENCE_ENDPOINTS_ENDPOINT = f"{url}/v2"
    HfApi._inner_whoami = _local_whoami(url)
    set_client_factory(_let_through(_saved["client_factory"], url, _skip_for))
    set_async_client_factory(_let_through(_saved["async_client_factory"], url, _skip_for_async))
    # HF_TOKEN comes before a token saved by `hf auth login` (huggingface_hub.get_token), so this one is used.
    os.environ["HF_TOKEN"] = token


def _local_whoami(url: str) -> Callable[..., dict]:
    def inner_whoami(self: Any, token: str) -> dict:
        # Same signature and error handling as HfApi._inner_whoami, against the local control plane.
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        response = get_session().get(f"{url}/api/whoami-v2", headers=build_hf_headers(token=token))
        hf_raise_for_status(response)
        return response.json()

    return inner_whoami


def _let_through(factory: Callable[[], Any], url: str, skip: Callable[..., Callable[[Any], Any]]) -> Callable[[], Any]:
    """A client factory whose request hooks (offline check, request id) skip requests to ``url``.

    ``skip`` wraps one hook: :func:`_skip_for` for the sync client, :func:`_skip_for_async` for the async one.
    """

    def make_client() -> Any:
        client = factory()
        hooks = client.event_hooks
        hooks["request"] = [skip(url, hook) for hook in hooks.get("request", [])]
        client.event_hooks = hooks
        return client

    return make_client


def _skip_for(url: str, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def maybe_hook(request: Any) -> Any:
        return None if str(request.url).startswith(url + "/") else hook(request)

    return maybe_hook


def _skip_for_async(url: str, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    async def maybe_hook(request: Any) -> Any:
        return None if str(request.url).startswith(url + "/") else await hook(request)

    return maybe_hook


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
