"""Proxy models: a production model's exact tensor shapes, types and tokenizer size, N layers, random weights.

A dense model's speed depends on its weights' types and shapes, hardly on their values (the one exception, how
their block scales vary, is imitated: :mod:`~pytest_axion.proxy.blocks`), so a proxy with a few of Llama 3.3 70B's
layers runs the very kernels of the 40 GB model on a machine that could never hold it, and nothing is
downloaded. See docs/proxy-models.md.

- :mod:`~pytest_axion.proxy.spec`: the table of published configurations, ``proxy:NAME[:LAYERS]``, ``--like FILE``
- :mod:`~pytest_axion.proxy.quant`: each tensor's type, as ``llama-quantize`` chooses it
- :mod:`~pytest_axion.proxy.writer`: the file (planned, checked, streamed, renamed), its cache and its reader
- :mod:`~pytest_axion.proxy.blocks`, :mod:`~pytest_axion.proxy.tokenizer`, :mod:`~pytest_axion.proxy.ggufio`: parts
"""

from pytest_axion.proxy.quant import SUPPORTED_QUANTIZATIONS, tensor_types
from pytest_axion.proxy.spec import (
    PROXY_SPECS,
    Llama3Rope,
    ProxyError,
    ProxySpec,
    known_spec,
    parse_proxy_spec,
    spec_from_gguf,
)
from pytest_axion.proxy.writer import (
    ProxyInfo,
    default_layers,
    ensure_proxy,
    proxy_cache_path,
    proxy_size_bytes,
    read_proxy_info,
    write_proxy,
)

__all__ = [
    "PROXY_SPECS",
    "SUPPORTED_QUANTIZATIONS",
    "Llama3Rope",
    "ProxyError",
    "ProxyInfo",
    "ProxySpec",
    "default_layers",
    "ensure_proxy",
    "known_spec",
    "parse_proxy_spec",
    "proxy_cache_path",
    "proxy_size_bytes",
    "read_proxy_info",
    "spec_from_gguf",
    "tensor_types",
    "write_proxy",
]
