"""``serve``: load a checkpoint, bind the address, run the app under uvicorn until stopped.

The socket is bound here, before uvicorn starts, so that a port in use is one clear
``ConfigError`` and ``port=0`` (any free port) reports the port it got.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, first_line
from ..log import get_logger

logger = get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "NANOGPT_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    """Where to listen, and how much the server takes on."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_batch: int = 16
    max_queue: int = 64
    max_tokens_cap: int | None = None  # default: the model's block size
    max_n: int = 16
    api_key: str | None = None
    model_name: str | None = None  # default: the checkpoint's name

    def check(self) -> None:
        """Raise one ``ConfigError`` naming every option out of its range."""
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be between 0 (any free port) and 65535 (got {self.port})")
        if self.max_batch < 1:
            problems.append(f"--max-batch must be at least 1 (got {self.max_batch})")
        if self.max_queue < 0:
            problems.append(f"--max-queue must not be negative (got {self.max_queue})")
        if not 1 <= self.max_n <= max(1, self.max_batch):
            problems.append(
                f"--max-n must be between 1 and --max-batch ({self.max_batch}) (got {self.max_n})"
            )
        if self.max_tokens_cap is not None and self.max_tokens_cap < 1:
            problems.append(f"--max-tokens-cap must be at least 1 (got {self.max_tokens_cap})")
        if self.api_key is not None and not self.api_key.strip():
            problems.append(f"--api-key (or ${API_KEY_ENV}) is empty")
        if problems:
            raise ConfigError("; ".join(problems))


def model_name_of(source: str | Path) -> str:
    """What ``/v1/models`` calls a checkpoint: its directory's name (``out-shakespeare-char``
    for ``out-shakespeare-char/ckpt.pt``), or the GPT-2 size given by name."""
    path = Path(source)
    if path.suffix in (".pt", ".safetensors", ".bin") or path.is_file():
        path = path.parent
    return path.resolve().name or str(source)


def serve(
    source: str | Path,
    options: ServeOptions,
    *,
    device: str = "auto",
    dtype: str = "auto",
    meta: str | Path | None = None,
    cpu_kernels: str | None = None,
) -> None:
    """Serve the checkpoint (or GPT-2 size) ``source`` until the process is stopped."""
    options.check()
    try:
        import uvicorn

        from .app import ServerSettings, build_app
    except ImportError as e:
        raise ConfigError(
            f"nanogpt serve needs Starlette and uvicorn ({first_line(e)}): "
            "pip install 'nanogpt-cli[serve]'"
        ) from None
    from ..sample import Sampler
    from .engine import Engine
    from .protocol import Limits

    sampler = Sampler.from_checkpoint(
        source, device=device, dtype=dtype, meta=meta, cpu_kernels=cpu_kernels
    )
    block = sampler.model.config.block_size
    cap = options.max_tokens_cap or block
    if cap > block:
        raise ConfigError(
            f"--max-tokens-cap {cap} is more than the model's context ({block} tokens)"
        )
    _check_cache_memory(sampler.model, options.max_batch, sampler.device)
    name = options.model_name or model_name_of(source)
    sock, url = bind(options.host, options.port)
    if not _is_loopback(sock) and options.api_key is None:
        logger.warning(
            f"listening on {options.host}, reachable from other machines, without an API key: "
            f"anyone who can reach it can use it (set --api-key or ${API_KEY_ENV})"
        )
    engine = Engine(
        sampler.model, sampler.tokenizer, max_batch=options.max_batch, max_queue=options.max_queue
    )
    limits = Limits(
        max_tokens_cap=cap, max_n=options.max_n, vocab_size=sampler.tokenizer.vocab_size
    )
    app = build_app(engine, ServerSettings(name, limits, options.api_key))
    config = uvicorn.Config(
        app,
        log_config=None,  # nanogpt's logging stays as it is
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    engine.start()
    logger.info(
        f"serving {name} at {url}/v1 (OpenAI completions; {options.max_batch} sequences at "
        f"a time on {sampler.device}); Ctrl-C stops",
        url=url,
        model=name,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.close()
        sock.close()


def _check_cache_memory(model: Any, max_batch: int, device: Any) -> None:
    """Refuse a KV cache of ``max_batch`` whole contexts that the device cannot hold, before
    it is allocated."""
    from ..sample import device_memory

    cfg = model.config
    element = next(model.parameters()).element_size()
    need = 2 * cfg.n_layer * max_batch * cfg.block_size * cfg.n_embd * element
    total = device_memory(device)
    if total is not None and need > total // 2:
        raise ConfigError(
            f"--max-batch {max_batch} needs {need / 2**30:,.1f} GiB for its KV cache, more "
            f"than half the {total / 2**30:,.1f} GiB of {device.type} memory here; "
            "use a smaller --max-batch"
        )


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket on ``host``:``port`` and the URL it serves at."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host"
        ) from None
    sock.set_inheritable(True)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    return sock, f"http://{shown}:{bound_port}"


def _is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback
