"""The ``tgi-course`` command: ``serve``, ``download`` and ``info``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict

from .config import ConfigError, ServerConfig, add_cli_arguments, is_loopback


def _config_from(args: argparse.Namespace) -> ServerConfig:
    overrides = {name: value for name, value in vars(args).items() if name not in {"command", "func"}}
    return ServerConfig.from_sources(overrides=overrides)


def serve(args: argparse.Namespace) -> int:
    """Load the model, then listen. Settings come from TGI's environment variables and these flags."""
    import torch

    from .models import ModelNotAvailable
    from .server import create_app
    from .server.lifecycle import serve as serve_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _config_from(args)
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
        app = create_app(config)
    except (ConfigError, ModelNotAvailable) as exc:
        print(f"tgi-course serve: {exc}", file=sys.stderr)
        return 2
    resolved = app.state.tgi.config
    loaded = app.state.tgi.loaded
    logging.getLogger("tgi_course").info("backend %s (%s)", loaded.backend, loaded.backend_reason)
    logging.getLogger("tgi_course").info(
        "serving %s on http://%s:%d (max_input_tokens=%s, max_total_tokens=%s, device=%s, weights=%s, backend=%s)",
        app.state.tgi.facts.name, resolved.hostname, resolved.port, resolved.max_input_tokens,
        resolved.max_total_tokens, loaded.device, loaded.weight_format, loaded.backend,
    )
    if not is_loopback(resolved.hostname) and not resolved.api_key:
        logging.getLogger("tgi_course").warning(
            "listening on %s without API_KEY: anyone who can reach this machine can use the server; set API_KEY to require a Bearer token",
            resolved.hostname,
        )
    serve_app(app, resolved.hostname, resolved.port)
    return 0


def download(args: argparse.Namespace) -> int:
    """Locate, verify and convert the default model so later starts load in about a second."""
    from .models.loading import convert_gguf
    from .models.registry import resolve

    source = resolve(args.model_id or "default")
    if source.kind not in {"default-gguf", "gguf"}:
        print(f"{source.name}: nothing to convert ({source.kind})")
        return 0
    folder = convert_gguf(source)
    print(f"{source.name}: ready at {folder}")
    return 0


def _masked(settings: dict[str, object]) -> dict[str, object]:
    """Settings fit to print: the API key is a secret, so only whether one is set shows."""
    return {**settings, "api_key": "***" if settings.get("api_key") else None}


def info(_: argparse.Namespace) -> int:
    """What this machine would serve with, as JSON."""
    import platform

    import torch
    import transformers

    from .models.loading import choose_device, choose_dtype, converted_folder
    from .models.registry import ModelNotAvailable, cache_dir, resolve

    device = choose_device("auto")
    report: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": str(device),
        "dtype": str(choose_dtype(device)).removeprefix("torch."),
        "cache_dir": str(cache_dir()),
        "settings": _masked(asdict(ServerConfig.from_sources())),
    }
    try:
        source = resolve("default")
        folder = converted_folder(source)
        report["default_model"] = {"name": source.name, "gguf": str(source.path), "converted": (folder / "model.safetensors").is_file()}
    except ModelNotAvailable as exc:
        report["default_model"] = {"error": str(exc)}
    print(json.dumps(report, indent=2, default=str))
    return 0


def lab_server_settings(environ: dict[str, str]) -> dict[str, str]:
    """Settings of the course's shared server taken from the caller's environment.

    LocalServer ignores server variables it inherits (a notebook's environment must not change the course
    server by accident) except the run-wide ``DTYPE``, which it reads itself; ``QUANTIZE=int4 make course`` is
    the other one a learner sets on purpose.
    """
    return {"quantize": environ["QUANTIZE"]} if environ.get("QUANTIZE") else {}


def jupyter_lab_command(notebooks: str, extra: list[str], *, euid: int | None = None) -> list[str]:
    """``jupyter lab`` on the course folder; as root it adds ``--allow-root``, which JupyterLab demands there.

    Docker, Codespaces and Colab-like machines run everything as root, and JupyterLab refuses to start as root
    without the flag ("Running as root is not recommended"): the course must open there all the same.
    """
    command = [sys.executable, "-m", "jupyter", "lab", notebooks, *extra]
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else -1
    if euid == 0 and "--allow-root" not in extra:
        command.append("--allow-root")
    return command


def lab(args: argparse.Namespace) -> int:
    """One shared local server for the whole course, then JupyterLab on notebooks/ pointed at it."""
    import subprocess

    from .course.connect import API_KEY_ENV, URL_ENV
    from .course.local_server import LocalServer

    env = dict(os.environ)
    command = jupyter_lab_command(args.notebooks, args.jupyter_args)
    if "--allow-root" in command and "--allow-root" not in args.jupyter_args:
        print("Running as root (as in Docker or Codespaces): starting JupyterLab with --allow-root, which it requires there.", flush=True)
    server = None
    if not env.get(URL_ENV):
        print(f"Starting the local Messages API server on port {args.port} ...", flush=True)
        # Notebook 03's chat page is served from a port of its own (another origin, on purpose): the shared server
        # must allow that origin, so the port is chosen here and handed to the notebook's kernel.
        from .course.chat_page import PORT_ENV as CHAT_PAGE_PORT_ENV
        from .processes import free_port

        page_port = free_port()
        env[CHAT_PAGE_PORT_ENV] = str(page_port)
        page_origin = (f"http://127.0.0.1:{page_port}",)
        server = LocalServer(port=args.port, **lab_server_settings(env), cors_allow_origin=page_origin).start()
        env[URL_ENV], env[API_KEY_ENV] = server.url, server.api_key
        print(f"Server ready at {server.url} (OpenAI base_url {server.base_url}); its log: {server.log_path}", flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tgi-course", description="Local Messages API server and course tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="Run the Messages API server (TGI's env vars apply).")
    add_cli_arguments(serve_parser)
    serve_parser.set_defaults(func=serve)
    download_parser = commands.add_parser("download", help="Prefetch and convert the default model.")
    download_parser.add_argument("--model-id", default=None)
    download_parser.set_defaults(func=download)
    info_parser = commands.add_parser("info", help="Show versions, device and model cache as JSON.")
    info_parser.set_defaults(func=info)
    lab_parser = commands.add_parser("lab", help="Start a local server and open the course in JupyterLab.")
    lab_parser.add_argument("--port", type=int, default=3000, help="port of the course's Messages API server (JupyterLab picks its own)")
    lab_parser.add_argument("--notebooks", default="notebooks")
    lab_parser.add_argument("jupyter_args", nargs="*", help="extra arguments for jupyter lab")
    lab_parser.set_defaults(func=lab)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
