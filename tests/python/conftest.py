import pytest

from server_harness import Server, grpc_modules


@pytest.fixture(scope="session")
def server():
    """The shared server: 8 slots, a 64-token prompt limit, a queue of 128 (the 100-request burst fits)."""
    s = Server("--slots", 8, "--max_queue", 128, "--max_prompt_tokens", 64,
               "--max_output_tokens", 100000, "--token_budget", 16)
    yield s
    rc = s.stop()
    assert rc == 0, s.logs()


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    return grpc_modules(tmp_path_factory.mktemp("griffin_stubs"))


@pytest.fixture()
def stub(server, pb):
    import grpc
    channel = grpc.insecure_channel(server.grpc_target)
    yield pb[1].GenerationStub(channel)
    channel.close()
