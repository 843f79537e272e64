"""Server mode's configuration and the failures found before any vLLM runs (no vllm needed: a trainer that
connects to a server elsewhere does not import it). The server itself: tests/vllm_engine/test_vllm_server.py."""

from __future__ import annotations

import socket

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import RLConfig, RolloutConfig, validate
from r1lab.errors import UserError
from r1lab.rollout import make_engine
from r1lab.rollout.vllm_server import AUTHKEY_ENV


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"vllm_mode": "server"}, "vllm_mode is read only by the vllm engine"),
        ({"engine": "vllm", "server_address": "10.0.0.2:8100"}, "server_address is read only in server mode"),
        ({"engine": "vllm", "server_timeout": 30}, "server_timeout is read only in server mode"),
        ({"engine": "vllm", "vllm_mode": "server", "server_address": "10.0.0.2"}, "is not host:port"),
        ({"engine": "vllm", "vllm_mode": "server", "server_address": "node:99999"}, "is not host:port"),
        ({"engine": "vllm", "vllm_mode": "sidecar"}, "vllm_mode"),
    ],
)
def test_server_keys_where_they_mean_nothing_are_refused(rollout, message):
    with pytest.raises(UserError, match=message):
        validate(RLConfig, {"data": {"path": "x.jsonl"}, "rollout": rollout})


def test_server_keys_are_accepted_in_server_mode():
    rollout = {"engine": "vllm", "vllm_mode": "server", "server_address": "node-2:8100", "server_timeout": 30}
    cfg = validate(RLConfig, {"data": {"path": "x.jsonl"}, "rollout": rollout}).rollout
    assert (cfg.vllm_mode, cfg.server_address, cfg.server_timeout) == ("server", "node-2:8100", 30.0)


@pytest.fixture
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_an_address_nobody_listens_on_times_out_clearly(tiny, monkeypatch):
    monkeypatch.setenv(AUTHKEY_ENV, "k")
    port = free_port()
    cfg = RolloutConfig(
        engine="vllm", vllm_mode="server", server_address=f"127.0.0.1:{port}", server_timeout=1.5
    )
    with pytest.raises(UserError, match=f"nobody answered at 127.0.0.1:{port} within 1.5 s") as e:
        make_engine(cfg, *tiny)
    assert "ConnectionRefusedError" in str(e.value) and "r1lab vllm-serve" in str(e.value)


def test_a_remote_server_needs_the_key(tiny, monkeypatch):
    monkeypatch.delenv(AUTHKEY_ENV, raising=False)
    cfg = RolloutConfig(engine="vllm", vllm_mode="server", server_address=f"127.0.0.1:{free_port()}")
    with pytest.raises(UserError, match=f"server_address is set but {AUTHKEY_ENV} is not"):
        make_engine(cfg, *tiny)
