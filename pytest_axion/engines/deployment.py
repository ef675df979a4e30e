"""How a run measures, decided once: the deployment.

One value, made from the settings at the start (``Settings.deployment``), answers every question about
the kind of run: which engine(s) to start and how (:meth:`Deployment.load`), what the header calls it,
the hardware id it defaults to, the two sides of an A/B session, and which figures apply (efficiency
needs the machine that computes; the prompt sweep needs one engine of our own). Code outside engines/
asks the deployment, never which class of engine it holds.

The kinds: ``in process`` (a llama.cpp worker process), ``installation A/B`` (two worker processes of two
interpreters), ``llama-server`` (started here, ``--axion-serve N``), ``endpoint`` (``--axion-endpoint``),
``served A/B`` (either of those as B, ``--axion-ab-endpoint`` as A) and ``replay`` (``--axion-replay``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_axion.credentials import Secret
from pytest_axion.engines.base import Engine
from pytest_axion.engines.paired import PairedEngine
from pytest_axion.engines.replay import read_recorded_run
from pytest_axion.engines.worker import WORKER_LABEL, EngineProcess, WorkerError
from pytest_axion.errors import AxionError, ModelFileError
from pytest_axion.machine.environment import OtherCpuMeter
from pytest_axion.machine.gguf import read_gguf_info
from pytest_axion.machine.hardware import HardwareFingerprint, collect_hardware, validate_hardware_id
from pytest_axion.machine.model import ModelFingerprint, embedded_model_path, fingerprint_model
from pytest_axion.machine.sizing import prompt_fill_tokens
from pytest_axion.options import DEFAULT_SERVE_CTX
from pytest_axion.records import EngineError, WarmUpRun

KINDS = ("in process", "installation A/B", "llama-server", "endpoint", "served A/B", "replay")


@dataclass(frozen=True)
class LoadedModel:
    """The deployment's engine, loaded, with the fingerprints of the model and the machine."""

    engine: Engine   # a worker process, a server's endpoint, a replay; an A/B pair of two
    model: ModelFingerprint
    hardware: HardwareFingerprint
    threads: int
    load_seconds: float
    warm_up: WarmUpRun | None = None

    def close(self) -> None:
        self.engine.close()


@dataclass(frozen=True)
class AbSides:
    """Where each side of an A/B session comes from, and its engine."""

    baseline_where: str
    baseline: Engine
    current_where: str
    current: Engine


@dataclass(frozen=True)
class Deployment:
    """What the settings say about how to measure; built once, asked everywhere."""

    threads: int
    model_path: str | None = None             # None: the embedded model
    python: str | None = None                 # the worker's interpreter; None: this one
    worker_timeout_s: float = 60.0
    hardware_override: str | None = None      # --axion-hardware
    hardware_source: str = "default"
    ab_python: str | None = None              # side A of an installation A/B session
    ab_rounds: int = 10
    serve_slots: int | None = None            # start llama-server with this many slots
    serve_ctx: int = DEFAULT_SERVE_CTX        # ... of this many tokens each
    endpoint: str | None = None
    endpoint_model: str | None = None
    endpoint_key: Secret | None = None
    ab_endpoint: str | None = None            # side A of a served A/B session
    ab_endpoint_key: Secret | None = None
    replay: str | None = None                 # a report whose samples are judged again

    @property
    def kind(self) -> str:
        if self.replay is not None:
            return "replay"
        if self.ab_python is not None:
            return "installation A/B"
        if self.ab_endpoint is not None:
            return "served A/B"
        return "llama-server" if self.serve_slots is not None else "endpoint" if self.endpoint else "in process"

    @property
    def served(self) -> bool:
        """B is a served deployment (llama-server or an endpoint): figures of users streaming answers."""
        return self.serve_slots is not None or self.endpoint is not None

    @property
    def paired(self) -> bool:
        """An A/B session: B judged against A measured side by side, round by round."""
        return self.ab_source is not None

    @property
    def ab_source(self) -> str | None:
        """Side A of an A/B session (an interpreter or an endpoint URL); None outside one."""
        return self.ab_python or self.ab_endpoint

    @property
    def computes_here(self) -> bool:
        """The measured system runs on this machine, so this machine's limits bound it (efficiency)."""
        return self.endpoint is None and self.replay is None

    @property
    def measures(self) -> bool:
        """This run measures (so this machine's state matters, and a miss can be confirmed by measuring again); a
        replay has only what was recorded, judged once."""
        return self.replay is None

    @property
    def sweeps_prompt(self) -> bool:
        """One engine of our own, measured directly: the prompt sweep can size its calls."""
        return self.kind == "in process"

    # -- for the header, before anything loads --------------------------------------------------------------

    def model_name(self) -> str:
        if self.replay is not None:
            return read_recorded_run(self.replay).model.label
        if self.endpoint is not None:
            return self.endpoint_model or "the endpoint's model"
        try:
            return Path(self.model_path or embedded_model_path()).name.removesuffix(".gguf")
        except AxionError:
            return "not installed"

    def hardware_id(self) -> str:
        """The hardware id the run is filed under, from the CPU alone (no worker is started for it)."""
        if self.endpoint is not None:
            return self.hardware_override or endpoint_hardware_id(self.endpoint)
        if self.replay is not None and self.hardware_override is None:
            return read_recorded_run(self.replay).hardware.hardware_id
        try:
            return collect_hardware(hardware_id_override=self.hardware_override,
                                    override_source=self.hardware_source).hardware_id
        except (AxionError, OSError):
            return "not known until the model loads"

    def run_threads(self) -> int:
        """The threads the run's figures are measured (or were recorded) with."""
        return read_recorded_run(self.replay).threads if self.replay is not None else self.threads

    def recorded_fill_tokens(self) -> int | None:
        """A replay's ``axion.fill_tokens`` as the recorded run used it (None: not a replay, or not recorded)."""
        return read_recorded_run(self.replay).fill_tokens if self.replay is not None else None

    def recorded_prompt_tps(self) -> float | None:
        """A replay's prompt speed that its workloads followed (``axion.gen_tokens``; None: not recorded)."""
        return read_recorded_run(self.replay).prompt_tps if self.replay is not None else None

    def run_repetitions(self, asked: int) -> int:
        """The repetitions per workload: as asked, or as the replayed run recorded them."""
        return read_recorded_run(self.replay).repetitions if self.replay is not None else asked

    def mode(self) -> str:
        if self.kind == "llama-server" and self.serve_slots is not None:
            from pytest_axion.engines.endpoint import slots_phrase  # only when served

            return f"served by llama-server with {slots_phrase(self.serve_slots, self.serve_ctx)}"
        return {
            "installation A/B": f"A/B against the llama-cpp-python of {self.ab_python}",
            "served A/B": f"A/B of the served deployment against {self.ab_endpoint}",
            "endpoint": f"served at {self.endpoint}",
            "replay": f"replaying {self.replay} (nothing is measured)",
        }.get(self.kind, "in process")

    # -- engines ----------------------------------------------------------------------------------------

    def load(self, *, say: Callable[[str], None] | None = None) -> LoadedModel:
        """Start the engine(s), warm them up, and fingerprint model and machine."""
        if self.replay is not None:
            return self._load_replay()
        if self.served:
            return self._load_served(say)
        path = self.model_path or str(embedded_model_path())
        info = read_gguf_info(path)  # refuse bad files before llama.cpp can crash on them
        model = fingerprint_model(path, info=info)   # before any process starts: nothing to leak if it fails
        start = time.perf_counter()
        engine: Engine
        python = self.python or sys.executable
        try:
            if self.ab_python is not None:
                engine = PairedEngine(self._worker(path, self.ab_python, "A/B baseline (--axion-ab-baseline)"),
                                      self._worker(path, python, "A/B current"), rounds=self.ab_rounds)
            else:
                engine = self._worker(path, python)()
        except (EngineError, WorkerError) as err:
            if type(err) is WorkerError and "could not load" in str(err):
                raise ModelFileError(f"{err}: check that {path} is a model this llama.cpp build supports") from None
            raise
        load_seconds = time.perf_counter() - start
        return self._warmed(engine, model, load_seconds,
                            llama_cpp_python=None, hardware_override=self.hardware_override,
                            override_source=self.hardware_source)

    def _worker(self, path: str, interpreter: str, label: str | None = None) -> Callable[[], Engine]:
        named = WORKER_LABEL if label is None else label
        return lambda: EngineProcess(interpreter, model_path=path, threads=self.threads,
                                     hang_floor_s=self.worker_timeout_s, label=named)

    def _warmed(self, engine: Engine, model: ModelFingerprint, load_seconds: float, *, llama_cpp_python: str | None,
                hardware_override: str | None, override_source: str) -> LoadedModel:
        try:
            # Until the speed settles, so that the session's first cell is not measured cold.
            meter = OtherCpuMeter().start()
            warm_up = engine.warm_up(prompt_fill_tokens(self.threads))
            warm_up = dataclasses.replace(warm_up, other_cpus=meter.stop())
            hardware = collect_hardware(
                system_info=engine.facts.system_info,
                llama_cpp_python_version=llama_cpp_python or engine.facts.llama_cpp_python_version,
                hardware_id_override=hardware_override, override_source=override_source)
        except BaseException:
            engine.close()   # a worker or server that hung or crashed in its warm-up must not outlive the session
            raise
        return LoadedModel(engine=engine, model=model, hardware=hardware, threads=self.threads,
                           load_seconds=load_seconds, warm_up=warm_up)

    def _load_served(self, say: Callable[[str], None] | None) -> LoadedModel:
        """llama-server started here (``--axion-serve N``) or an endpoint; with ``--axion-ab-endpoint`` as A."""
        from pytest_axion.engines.endpoint import EndpointEngine, served_model_name  # only when served (httpx)

        start = time.perf_counter()
        if self.serve_slots is not None:
            from pytest_axion.serve.build import SERVER, build_programs
            from pytest_axion.serve.llama_server import LlamaServer

            path = self.model_path or str(embedded_model_path())
            info = read_gguf_info(path)
            model = fingerprint_model(path, info=info)
            # the deployment's shape names its baselines: slots, and the context per slot where it is not the default
            context = "" if self.serve_ctx == DEFAULT_SERVE_CTX else f"-c{self.serve_ctx}"
            model = dataclasses.replace(model,
                                        file_name=f"{model.label}@llama-server-np{self.serve_slots}{context}.gguf")
            binary = build_programs((SERVER,), say=say)[SERVER]
            server = LlamaServer(binary, path, threads=self.threads, slots=self.serve_slots,
                                 ctx_per_slot=self.serve_ctx).start()
            try:
                engine = EndpointEngine(server.url, label="llama-server", restart_server=server.restart,
                                        server=server, api_key=server.api_key)
            except BaseException:
                server.stop()
                raise
            hardware_override, override_source = self.hardware_override, self.hardware_source
        else:
            url = str(self.endpoint)
            engine = EndpointEngine(url, model=self.endpoint_model, api_key=self.endpoint_key)
            model_name = served_model_name(engine.server.model)
            digest = hashlib.sha256(f"{url} {model_name} {engine.server.build}".encode()).hexdigest()
            model = ModelFingerprint(file_name=f"{model_name}@endpoint", path=url, sha256=digest,
                                     architecture="served", quantization="unknown", n_params=0, size_bytes=0)
            # The deployment, not this client machine, is the hardware: name it, or it is named after the endpoint.
            hardware_override = self.hardware_override or endpoint_hardware_id(url)
            override_source = self.hardware_source if self.hardware_override else "--axion-endpoint"
        served: Engine = engine
        if self.ab_endpoint is not None:
            # B is the deployment named above; A the one it is judged against, measured in alternating rounds
            ab_url, ab_key = self.ab_endpoint, self.ab_endpoint_key
            try:
                served = PairedEngine(lambda: EndpointEngine(ab_url, label="A/B baseline endpoint",
                                                             option="--axion-ab-endpoint", api_key=ab_key),
                                      lambda: engine, rounds=self.ab_rounds)
            except BaseException:
                engine.close()
                raise
        return self._warmed(served, model, time.perf_counter() - start, llama_cpp_python="served",
                            hardware_override=hardware_override, override_source=override_source)

    def _load_replay(self) -> LoadedModel:
        recorded = read_recorded_run(str(self.replay))
        hardware = recorded.hardware
        if self.hardware_override is not None:
            hardware_id = validate_hardware_id(self.hardware_override, source=self.hardware_source)
            hardware = dataclasses.replace(hardware, hardware_id=hardware_id, hardware_id_source=self.hardware_source)
        engine = recorded.engine()
        return LoadedModel(engine=engine, model=recorded.model, hardware=hardware, threads=recorded.threads,
                           load_seconds=0.0, warm_up=engine.warm_up(prompt_fill_tokens(recorded.threads)))

    # -- what the reports name -----------------------------------------------------------------------------

    def describe(self, engine: Engine) -> str:
        """What a served run measured, for the reports ("" when nothing was served)."""
        return engine.describe() if self.served else ""

    def ab_sides(self, engine: Engine) -> AbSides | None:
        """The two sides of an A/B session (None outside one)."""
        if not isinstance(engine, PairedEngine) or self.ab_source is None:
            return None
        current = self.endpoint or ("llama-server" if self.served else sys.executable)
        return AbSides(self.ab_source, engine.baseline, current, engine.current)


def endpoint_hardware_id(url: str) -> str:
    """An external endpoint's hardware id, unless --axion-hardware names it: ``endpoint-<host>-<port>``."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    return "endpoint-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in host)
