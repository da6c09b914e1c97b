"""llama.cpp's own tools: where the build is cached, how the server is started, and the errors when it is not built
(no compiling here: the real build is what `make setup` runs, and tests/foundation/test_serving.py serves with it)."""

import os
import stat

import pytest

from agentlab.llm import llamacpp
from agentlab.llm.serving import ServerSpec, ServingError, ServingManager, default_parallel, llama_server_command


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """An engine folder with executables that are not llama.cpp (only their paths matter here)."""
    monkeypatch.setenv("AGENTLAB_LLAMA_CPP_DIR", str(tmp_path / "engine"))
    (tmp_path / "engine" / "bin").mkdir(parents=True)
    (tmp_path / "engine" / "src").mkdir()
    (tmp_path / "engine" / "src" / "convert_hf_to_gguf.py").write_text("")
    for tool in llamacpp.TOOLS:
        path = tmp_path / "engine" / "bin" / tool
        path.write_text("#!/bin/sh\nexit 3\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return tmp_path / "engine"


def test_slots_follow_the_cores_and_keep_the_kv_cache_bounded():
    assert [default_parallel(4096, cores) for cores in (1, 2, 4, 8)] == [4, 8, 16, 16]
    assert default_parallel(32768, cores=2) == 2  # long contexts: fewer slots, the same KV pool
    assert default_parallel(200_000, cores=2) == 1


def test_the_server_decodes_parallel_slots_each_limited_to_n_ctx(fake_engine):
    cmd = llama_server_command(ServerSpec(n_ctx=2048, parallel=6, n_threads=2), "/m.gguf", "m", 8080)
    assert cmd[0] == str(fake_engine / "bin" / "llama-server")
    args = dict(zip(cmd[1::2], cmd[2::2]))
    assert "--cont-batching" in cmd and "--kv-unified" in cmd
    assert (args["--parallel"], args["--kv-unified-per-slot"], args["--threads"]) == ("6", "2048", "2")
    auto = llama_server_command(ServerSpec(n_ctx=4096), "/m.gguf", "m", 8080)
    assert auto[auto.index("--parallel") + 1] == str(default_parallel(4096))


def test_cache_folder_is_per_cpu_and_build_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTLAB_LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plain = llamacpp.engine_dir()
    assert plain.parent == tmp_path / "agentlab" / "llama.cpp" and plain.name.startswith(llamacpp.SOURCE_VERSION)
    monkeypatch.setenv("AGENTLAB_LLAMA_CPP_CMAKE_ARGS", "-DGGML_CUDA=ON")
    assert llamacpp.engine_dir() != plain  # a GPU build never replaces the CPU one


def test_a_missing_build_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTLAB_LLAMA_CPP_DIR", str(tmp_path / "nothing"))
    assert not llamacpp.is_built()
    with pytest.raises(llamacpp.EngineNotBuilt, match="make setup"):
        llamacpp.tool_path("llama-server")
    with pytest.raises(llamacpp.EngineNotBuilt, match="source tree"):
        llamacpp.source_tree()
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ServingError, match="make setup"):
        ServingManager(tmp_path / "ws").start(ServerSpec(model=str(model)))


def test_a_server_that_exits_is_reported(fake_engine, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ServingError, match="exited with code 3"):
        ServingManager(tmp_path / "ws").start(ServerSpec(model=str(model)), timeout_s=60)
    assert os.access(llamacpp.tool_path("llama-quantize"), os.X_OK) and llamacpp.is_built()


def test_the_server_threads_sleep_instead_of_spinning_unless_told_otherwise(fake_engine, tmp_path, monkeypatch):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _, _, _, env = ServingManager(tmp_path / "ws")._command(ServerSpec(model=str(model)), 8080)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # spinning waiters collapse decoding on a busy machine
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert ServingManager(tmp_path / "ws")._command(ServerSpec(model=str(model)), 8080)[3]["OMP_WAIT_POLICY"] == "ACTIVE"
