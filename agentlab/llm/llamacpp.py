"""llama.cpp's own tools, compiled once from a source tree the project already trusts.

The llama.cpp tree inside llama-cpp-python's source distribution (PyPI, MIT) is fetched with pip, and
``llama-server`` (parallel slots, continuous batching, grammar-constrained JSON) and ``llama-quantize`` are
compiled from it with CMake, tuned to this machine's CPU. The tree stays beside the binaries: its
``convert_hf_to_gguf.py`` turns a trained checkpoint into a GGUF served like its base.

The result is cached per user and CPU, ``~/.cache/agentlab/llama.cpp/<version>-<cpu>/{bin,src}``
(``AGENTLAB_LLAMA_CPP_DIR`` names another folder; ``AGENTLAB_LLAMA_CPP_CMAKE_ARGS`` adds CMake flags, e.g.
``-DGGML_CUDA=ON``, and gets a folder of its own). ``make setup`` builds it:

    python -m agentlab.llm.llamacpp build      # a no-op when the cache has it; --force rebuilds
    python -m agentlab.llm.llamacpp where      # the folder
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from agentlab.errors import AgentlabError

# the llama-cpp-python release whose vendored llama.cpp we build (its tree is MIT, like llama.cpp)
SOURCE_PACKAGE = "llama-cpp-python"
SOURCE_VERSION = "0.3.36"
TOOLS = ("llama-server", "llama-quantize")
BUILD_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",  # this CPU's instruction set (AVX2/AVX-512...): the cache folder is per CPU
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries
    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",  # no model downloads from the server
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",  # no web UI (it would need npm or a download)
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
)


class EngineNotBuilt(AgentlabError):
    """llama.cpp's tools are not compiled here; the message says how to build them."""


def extra_cmake_args() -> list[str]:
    return shlex.split(os.environ.get("AGENTLAB_LLAMA_CPP_CMAKE_ARGS", ""))


def _cpu_key() -> str:
    """What a native build depends on: the machine, the CPU's instruction-set flags and extra CMake flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    raw = "|".join([platform.machine(), flags, *extra_cmake_args()])
    return f"{platform.machine()}-{hashlib.sha256(raw.encode()).hexdigest()[:10]}"


def engine_dir() -> Path:
    """Where the built tools and their source tree live."""
    override = os.environ.get("AGENTLAB_LLAMA_CPP_DIR")
    if override:
        return Path(override).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "agentlab" / "llama.cpp" / f"{SOURCE_VERSION}-{_cpu_key()}"


def _fix() -> str:
    return "run `make setup` (or `python -m agentlab.llm.llamacpp build`, about 5 minutes on 2 cores)"


def tool_path(name: str) -> Path:
    """A built llama.cpp tool (``llama-server``, ``llama-quantize``)."""
    path = engine_dir() / "bin" / name
    if not os.access(path, os.X_OK):
        raise EngineNotBuilt(f"llama.cpp's {name} is not built at {path}: {_fix()}")
    return path


def source_tree() -> Path:
    """The llama.cpp source tree the tools were built from (``convert_hf_to_gguf.py``, ``gguf-py/``)."""
    tree = engine_dir() / "src"
    if not (tree / "convert_hf_to_gguf.py").is_file():
        raise EngineNotBuilt(f"llama.cpp's source tree is missing at {tree}: {_fix()}")
    return tree


def is_built() -> bool:
    return all(os.access(engine_dir() / "bin" / t, os.X_OK) for t in TOOLS) and (
        engine_dir() / "src" / "convert_hf_to_gguf.py").is_file()


def build(force: bool = False, jobs: int | None = None, log=print) -> Path:
    """Fetch the source, compile the tools and cache them (once: one build at a time per folder)."""
    target = engine_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second `make setup` waits for the first build, then reuses it
        if is_built() and not force:
            return target
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="agentlab-llama.cpp-", dir=target.parent) as tmp:
            work = Path(tmp)
            log(f"llama.cpp: fetching {SOURCE_PACKAGE}=={SOURCE_VERSION}'s source tree with pip")
            src = _fetch_source(work)
            log(f"llama.cpp: compiling {', '.join(TOOLS)} (native CPU build, {jobs or os.cpu_count()} jobs)")
            bins = _compile(src, work / "build", jobs or os.cpu_count() or 1, log)
            staged = work / "engine"
            (staged / "bin").mkdir(parents=True)
            for tool in TOOLS:
                shutil.copy2(bins / tool, staged / "bin" / tool)
            src.rename(staged / "src")
            (staged / "build.json").write_text(json.dumps({
                "source": f"{SOURCE_PACKAGE}=={SOURCE_VERSION}", "flags": [*BUILD_FLAGS, *extra_cmake_args()],
                "seconds": round(time.monotonic() - started), "built": time.strftime("%Y-%m-%dT%H:%M:%S")}))
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)
        log(f"llama.cpp: built in {time.monotonic() - started:.0f} s, cached at {target}")
        return target


def _fetch_source(work: Path) -> Path:
    """The sdist's ``vendor/llama.cpp`` tree, extracted under ``work``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"{SOURCE_PACKAGE}=={SOURCE_VERSION}", "-d", str(work)], check=True)
    sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(work / "src", members=[m for m in members if m.name], filter="data")
    sdist.unlink()
    return work / "src"


def _compile(src: Path, build_dir: Path, jobs: int, log) -> Path:
    if shutil.which("cmake") is None:
        raise EngineNotBuilt("cmake is not installed: pip install cmake (or apt-get install cmake), then "
                             + _fix())
    for cmd in (["cmake", "-S", str(src), "-B", str(build_dir), *BUILD_FLAGS, *extra_cmake_args()],
                ["cmake", "--build", str(build_dir), "--target", *TOOLS, "-j", str(jobs)]):
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if out.returncode != 0:
            tail = "\n".join(out.stdout.splitlines()[-25:])
            raise EngineNotBuilt(f"compiling llama.cpp failed ({' '.join(cmd[:3])} ...):\n{tail}")
    return build_dir / "bin"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agentlab.llm.llamacpp", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["build", "where"])
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache has the tools")
    ap.add_argument("--jobs", type=int, help="parallel compile jobs (default: every core)")
    a = ap.parse_args(argv)
    if a.action == "where":
        print(engine_dir())
        return 0 if is_built() else 1
    try:
        build(force=a.force, jobs=a.jobs, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (EngineNotBuilt, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
