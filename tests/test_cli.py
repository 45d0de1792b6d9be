"""The console script: `tgi-course info` and `tgi-course download` as a learner runs them."""

import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tgi_course", *args], capture_output=True, text=True, timeout=300)


def test_info_reports_device_and_default_model():
    result = run("info")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] in {"cpu", "cuda"}
    assert report["default_model"]["name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert report["settings"]["port"] == 3000


def test_info_never_prints_the_api_key():
    import os

    result = subprocess.run([sys.executable, "-m", "tgi_course", "info"], capture_output=True, text=True, timeout=300, env={**os.environ, "API_KEY": "s3cret-key"})
    assert result.returncode == 0, result.stderr
    assert "s3cret-key" not in result.stdout
    assert json.loads(result.stdout)["settings"]["api_key"] == "***"


def test_download_is_idempotent_and_says_where():
    result = run("download")
    assert result.returncode == 0, result.stderr
    assert "ready at" in result.stdout


def test_serve_help_lists_tgi_variable_names():
    result = run("serve", "--help")
    for name in ("MAX_INPUT_TOKENS/MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS", "MESSAGES_API_ENABLED", "API_KEY", "HOSTNAME"):
        assert name in result.stdout


def test_serve_refuses_an_unknown_quantize_value_and_names_it():
    result = subprocess.run([sys.executable, "-m", "tgi_course", "serve", "--quantize", "gptq"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "QUANTIZE must be one of int4 or unset, got 'gptq'" in result.stderr


def test_make_course_passes_quantize_to_the_course_server():
    from tgi_course.cli import lab_server_settings

    assert lab_server_settings({"QUANTIZE": "int4", "MAX_TOTAL_TOKENS": "64"}) == {"quantize": "int4"}
    assert lab_server_settings({"QUANTIZE": ""}) == {}


def test_jupyterlab_is_started_with_allow_root_only_as_root():
    from tgi_course.cli import jupyter_lab_command

    as_root = jupyter_lab_command("notebooks", ["--no-browser"], euid=0)
    assert as_root[-3:] == ["notebooks", "--no-browser", "--allow-root"]
    assert "--allow-root" not in jupyter_lab_command("notebooks", [], euid=1000)
    assert jupyter_lab_command("nb", ["--allow-root"], euid=0).count("--allow-root") == 1
