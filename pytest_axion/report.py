"""Render measurements for people: the header and the summary table."""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from pytest_axion.hardware import HardwareFingerprint
from pytest_axion.model import ModelFingerprint
from pytest_axion.records import Measurement

_FLAGS_SHOWN = ("KLEIDIAI", "REPACK", "OPENMP", "LLAMAFILE", "AVX512", "AVX2", "SVE", "DOTPROD", "MATMUL_INT8")


def header_lines(model: ModelFingerprint, hardware: HardwareFingerprint, *, threads: int,
                 load_seconds: float) -> list[str]:
    """What was measured, on what, with what: the lines above the table."""
    flags = hardware.llama_cpp_system_info
    shown = " ".join(f"{name}={flags[name]}" for name in _FLAGS_SHOWN if name in flags)
    return [
        f"model: {model.file_name} ({model.architecture}, {model.quantization}, "
        f"{model.n_params / 1e6:.0f}M params, {model.size_bytes / 2**20:.0f} MiB, sha256 {model.sha256[:12]}) "
        f"loaded in {load_seconds:.2f} s",
        f"hardware: {hardware.hardware_id} ({hardware.hardware_id_source}): {hardware.cpu_model}, "
        f"{hardware.microarch}, {hardware.logical_cores} logical / {hardware.physical_cores} physical cores",
        f"llama-cpp-python {hardware.llama_cpp_python}, threads {threads}, llama.cpp: {shown or 'no flags reported'}",
    ]


def _format(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def measurement_rows(measurements: Iterable[Measurement]) -> list[list[str]]:
    rows = []
    for m in measurements:
        s = m.summary
        rows.append([
            m.nodeid, m.metric, str(m.batch_size), str(m.n_prompt), str(m.n_gen),
            f"{_format(s.median)} {m.unit}", f"{_format(s.iqr)}", f"{s.cv * 100:.1f}%", str(s.n),
        ])
    return rows


def measurement_table(measurements: Iterable[Measurement]) -> str:
    """Median with IQR and CV per measurement; the statistic is named in the header."""
    table: str = tabulate(
        measurement_rows(measurements),
        headers=["test", "metric", "batch", "prompt", "gen", "median", "IQR", "CV", "n"],
        tablefmt="simple",
        disable_numparse=True,
    )
    return table
