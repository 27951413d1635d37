"""A runner that sends batches to a Triton Inference Server (``tritonclient``, imported lazily).

``TritonRunner(model, url)``: ``model`` is a model name on the server, or a local model folder
written by ``solo-deploy export --format triton`` (its folder name is the model name, and its
``config.pbtxt`` supplies the metadata without a server round trip). gRPC by default
(``host:8001``, or ``grpc://host:8001``); a URL starting with ``http://`` uses the HTTP client
(``host:8000``). ``https://`` and ``grpcs://`` use the same clients over TLS (``ssl=True``).

Returns the raw deploy outputs ``(scores, kernels, [mask_feat, ...])`` as numpy arrays (decoupled
SOLO: ``(scores, None, [mask_x_0.., mask_y_0..])``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.meta import ModelMeta
from ..core.pbtxt import parse_pbtxt
from ..errors import BadInputError, RuntimeFailure, ServiceLost, one_line
from .runners import Runner

__all__ = ["TRITONCLIENT_MISSING", "TritonRunner"]

TRITONCLIENT_MISSING = "tritonclient is not installed: pip install tritonclient[grpc]"


def _import_client(http: bool) -> Any:
    try:
        if http:
            import tritonclient.http as client
        else:
            import tritonclient.grpc as client
    except ImportError:
        hint = "pip install tritonclient[http]" if http else "pip install tritonclient[grpc]"
        raise BadInputError(f"tritonclient is not installed: {hint}") from None
    return client


def _split_url(url: str) -> tuple[bool, bool, str]:
    """``url`` -> (HTTP client?, TLS?, address without the scheme). tritonclient takes the address
    without a scheme and a separate ``ssl`` flag; stripping ``https://`` without setting it would
    speak plain HTTP to a TLS port."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return False, False, url
    scheme = scheme.lower()
    if scheme not in ("http", "https", "grpc", "grpcs"):
        raise BadInputError(f"unknown Triton URL scheme {scheme!r} in {url}: use http, https, grpc or grpcs")
    return scheme in ("http", "https"), scheme in ("https", "grpcs"), rest


def _parameter(config: dict[str, Any], key: str) -> Any:
    """``parameters[key]`` of a model config in either shape it arrives in: the server's JSON (a map
    ``{key: {"string_value": ...}}``) or a parsed ``config.pbtxt``, where the protobuf map is written
    as repeated ``{key: ..., value: {...}}`` entries (one entry: a dict, several: a list)."""
    params = config.get("parameters") or {}
    entries = params if isinstance(params, list) else [params]
    for entry in entries:
        if isinstance(entry, dict) and "key" in entry and "value" in entry:
            if entry["key"] == key:
                return entry["value"]
        elif isinstance(entry, dict) and key in entry:
            return entry[key]
    return None


def _transient(exc: BaseException) -> bool:
    """A failure that a server coming back would cure: the connection (refused, reset, timed out)
    or the server saying it is unavailable; not a request the model refuses."""
    if type(exc).__name__ != "InferenceServerException":
        return True  # socket and client-library errors: nothing answered
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status or "").upper()
    text = str(exc).lower()
    # A server shutting down unloads its models first: "has no available versions" comes before
    # the connection goes.
    return ("UNAVAILABLE" in code or code in ("502", "503", "504") or "connect" in text or "socket" in text
            or "no available versions" in text)


def _meta_from_config(config: dict[str, Any], source: str) -> ModelMeta:
    entry = _parameter(config, "solo_deploy")
    if isinstance(entry, dict):
        raw = entry.get("string_value")
    else:
        raw = entry
    if not raw:
        raise BadInputError(f"{source}: the Triton model config has no solo_deploy parameter "
                            f"(write the repository with solo-deploy export --format triton)")
    try:
        return ModelMeta.from_dict(json.loads(raw), source=source)
    except json.JSONDecodeError:
        raise BadInputError(f"{source}: solo_deploy parameter is not valid JSON") from None


class TritonRunner(Runner):
    """Runner over Triton: uint8 (N, H, W, 3) numpy in, numpy raw outputs back.

    Building it connects and reads the model's configuration (its metadata travels there); the
    model is loaded by the server, so :meth:`start` has nothing to load."""

    backend = "triton"

    def __init__(self, model_name_or_path: str, url: str = "localhost:8001", timeout_s: float = 60.0,
                 retry_s: float = 30.0) -> None:
        self.url = url
        # A request that fails because the server went away is retried until it has failed for
        # this long (run's --reconnect-timeout), then the run stops with one line.
        self.retry_s = float(retry_s)
        http, tls, address = _split_url(url)
        local = Path(model_name_or_path)
        local_config: dict[str, Any] | None = None
        if local.is_file() and local.name == "config.pbtxt":
            local = local.parent
        if (local / "config.pbtxt").is_file():
            local_config = parse_pbtxt((local / "config.pbtxt").read_text(encoding="utf-8"))
            self.model_name = str(local_config.get("name") or local.name)
        else:
            self.model_name = str(model_name_or_path)
        self._client_mod = _import_client(http)
        self._http = http
        self.ssl = tls
        self._timeout = timeout_s
        try:
            if http:
                self.client = self._client_mod.InferenceServerClient(url=address, network_timeout=timeout_s, ssl=tls)
            else:
                self.client = self._client_mod.InferenceServerClient(url=address, ssl=tls)
            live = self.client.is_server_live()
        except Exception as exc:  # noqa: BLE001 - connection errors of either client
            raise BadInputError(f"cannot reach Triton at {url}: {one_line(exc)}") from None
        if not live:
            raise BadInputError(f"Triton at {url} is not live")
        try:
            if not self.client.is_model_ready(self.model_name):
                raise BadInputError(f"model {self.model_name!r} is not ready on Triton at {url}")
            config = local_config
            if config is None:
                cfg = self.client.get_model_config(self.model_name, **({} if http else {"as_json": True}))
                config = cfg.get("config", cfg)  # gRPC wraps the config, HTTP does not
        except BadInputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"Triton at {url} cannot describe model {self.model_name!r}: {one_line(exc)}") \
                from None
        super().__init__(_meta_from_config(config, f"Triton model {self.model_name!r}"), f"triton:{url}")
        self.max_batch = int(config.get("max_batch_size", 0) or 0)
        self._fixed_batch: int | None = None
        if self.max_batch == 0:
            # Static-batch model: dims carry the batch; send chunks of exactly that size.
            inputs = config.get("input") or []
            dims = inputs[0].get("dims") if inputs else None
            if dims and int(dims[0]) > 0:
                self._fixed_batch = int(dims[0])

    def _request(self, images: np.ndarray) -> list[np.ndarray]:
        """One inference request of a batch the server accepts."""
        client = self._client_mod
        inp = client.InferInput(self.input_name, list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        outs = [client.InferRequestedOutput(n) for n in self.output_names]
        extra = {} if self._http else {"client_timeout": self._timeout}  # HTTP: set on the client
        first_failure = None
        while True:
            try:
                res = self.client.infer(self.model_name, [inp], outputs=outs, **extra)
                break
            except Exception as exc:  # noqa: BLE001 - either client's errors; sorted by _transient
                if not _transient(exc):
                    raise RuntimeFailure(f"Triton inference failed: {one_line(exc)}") from None
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                if now - first_failure >= self.retry_s:
                    raise ServiceLost(f"Triton at {self.url} has not answered for {self.retry_s:g} s "
                                      f"(--reconnect-timeout): {one_line(exc)[:160]}") from None
                time.sleep(min(0.5, max(0.05, self.retry_s / 10)))
        return [res.as_numpy(n) for n in self.output_names]

    def _start(self) -> None:
        pass  # the server holds the model

    def _to_device(self, batch: np.ndarray) -> Any:
        return np.ascontiguousarray(batch)

    def _infer(self, images: np.ndarray) -> list[Any]:
        step = self._fixed_batch or self.max_batch or images.shape[0]
        parts = [self._request(images[i:i + step]) for i in range(0, images.shape[0], step)]
        return parts[0] if len(parts) == 1 else [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]

    def _to_host(self, out: list[Any]) -> list[Any]:
        return list(out)  # numpy already: the client copied the response
