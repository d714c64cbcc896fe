"""Where a sweep's steps run: in this process one after another, or as tasks on a Ray cluster.

A sweep is a few shared steps (the base F16, the base log-probs, the imatrix) and then one
independent cell per model, text and type (quantize it, evaluate it). The sweep driver
(`llmtk.evals.sweep`) turns them into `Task`s, hands each stage to an executor, and records every
`Outcome` in the sweep folder as it arrives, so the report, `sweep.json` and resuming are the same
code whichever executor ran the work.

- `LocalExecutor`: the tasks in order, in this process (what `llmtk sweep` always did).
- `RayExecutor`: each task is a Ray task declaring its threads as `num_cpus`, retried
  `max_retries` times when its worker dies (killed, out of memory, node lost) or it raises an
  OSError (a storage hiccup). Files travel through the sweep folder when the workers see it at the
  same path (`storage="shared"`), or through Ray's object store (`storage="object"`): inputs are
  put once and written to a temporary folder on the worker, outputs come back as bytes and are
  written into the sweep folder by the driver.

Ray is optional (`pip install 'llmtk[ray]'`); it is imported only by `RayExecutor`.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from llmtk.errors import InputError
from llmtk.outputs import OutputError

log = logging.getLogger(__name__)

STORAGE_MODES = ("shared", "object")
DEFAULT_RAY_RETRIES = 3
# seconds to wait for a TCP answer from a cluster's address before calling it unreachable:
# ray.init itself retries an unreachable address for minutes
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Task:
    """One step of a sweep: `fn(**args, **inputs, **outputs)` returns a JSON-able dict.

    `fn` is a module-level function (workers import it by name); `inputs` and `outputs` are the
    files it reads and writes, by keyword, so that an executor may move them (object storage);
    `threads` is what it may use (None: all cores of this machine, local runs only)."""

    key: str
    label: str
    fn: Callable[..., dict[str, Any]]
    args: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    threads: int | None = None


@dataclass
class Outcome:
    """What a task gave: `result` (its dict), or `error` (one line: the exception's type and message)."""

    task: Task
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


def describe(e: BaseException) -> str:
    """An exception as one line: `InputError: text too short` (the message alone for llmtk's own)."""
    from llmtk.errors import LlmtkError

    text = " ".join(str(e).split()) or repr(e)
    return text if isinstance(e, LlmtkError) else f"{type(e).__name__}: {text}"


class LocalExecutor:
    """The tasks one after another in this process; `started` is called before each."""

    name = "local"

    def task_threads(self, threads: int | None) -> int | None:
        return threads

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def run(self, tasks: list[Task], started: Callable[[Task], None] = lambda t: None) -> Iterator[Outcome]:
        for task in tasks:
            started(task)
            t0 = time.perf_counter()
            try:
                result = task.fn(**task.args, **task.inputs, **task.outputs)
            except OutputError:
                # the sweep folder cannot be written (disk full, read-only): every later step would
                # fail the same way, so the sweep stops here with that one line (exit 2)
                raise
            except Exception as e:  # one cell's failure is reported; the others go on
                log.debug("task %s failed", task.key, exc_info=True)
                yield Outcome(task, error=describe(e), seconds=time.perf_counter() - t0)
            else:
                yield Outcome(task, result=result, seconds=time.perf_counter() - t0)

    def running(self, in_flight: int) -> int:
        return min(in_flight, 1)


# --- Ray --------------------------------------------------------------------------------------------

def import_ray():
    """The `ray` module, or the one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed: pip install 'llmtk[ray]'") from None
    return ray


def check_address(address: str | None) -> None:
    """Refuse a Ray address that cannot be a cluster, or whose host does not answer, before any
    work (ray.init would retry an unreachable one for minutes). None starts a local cluster,
    `auto` joins the one this machine runs (ray start --head), `HOST:PORT` the GCS of a head
    node, `ray://HOST:PORT` its Ray Client server."""
    if address in (None, "auto", "local"):
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise InputError(f"--ray {address!r}: not a Ray address (auto, HOST:PORT or ray://HOST:PORT; "
                         "put --ray after the model files to start a local cluster)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); "
                         "start one with `ray start --head` or pass its address") from None


class RayExecutor:
    """Tasks on a Ray cluster: joined at `address` (see `check_address`), or a local one started
    for the sweep when None (and stopped after it). A cluster this process already joined
    (`ray.init` called before) is used as it is."""

    name = "ray"

    def __init__(self, address: str | None = None, *, storage: str = "shared",
                 max_retries: int = DEFAULT_RAY_RETRIES, default_threads: int = 1) -> None:
        if storage not in STORAGE_MODES:
            raise InputError(f"--ray-storage {storage!r}: one of {', '.join(STORAGE_MODES)}")
        if max_retries < 0:
            raise InputError(f"--ray-retries {max_retries}: must be at least 0")
        self.address = None if address == "local" else address
        self.storage = storage
        self.max_retries = max_retries
        self.default_threads = default_threads
        self._started = False
        self._put: dict[tuple[str, int, int], Any] = {}
        self._slots = 1

    def task_threads(self, threads: int | None) -> int:
        """Every Ray task declares its threads, so a cell without --threads gets `default_threads`."""
        return threads or self.default_threads

    def __enter__(self) -> "RayExecutor":
        ray = import_ray()
        if not ray.is_initialized():
            check_address(self.address)
            try:
                extra = {"include_dashboard": False} if self.address is None else {}
                ray.init(address=self.address, logging_level=logging.WARNING, **extra)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"--ray {self.address}" if self.address else "--ray"
                hint = ""
                if self.address is not None and os.environ.get("RAY_AUTH_MODE") != "token":
                    # a cluster started with `ray start` may require its token (Ray 2.60 enables it by default)
                    hint = "; a cluster using token authentication needs RAY_AUTH_MODE=token and its token"
                raise InputError(f"{where}: cannot start or join the cluster ({describe(e)}{hint})") from None
            self._started = True
        self._cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._put.clear()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def running(self, in_flight: int) -> int:
        """How many of the submitted tasks run now, as far as the cluster's CPUs allow."""
        return min(in_flight, self._slots)

    def run(self, tasks: list[Task], started: Callable[[Task], None] = lambda t: None) -> Iterator[Outcome]:
        """Submit every task, then yield outcomes as they finish (any order)."""
        import ray

        if not tasks:
            return
        remote = ray.remote(_run_on_worker)
        widest = max(self.task_threads(t.threads) for t in tasks)
        self._slots = max(1, int(self._cpus // widest))
        pending: dict[Any, tuple[Task, float]] = {}
        for task in tasks:
            threads = self.task_threads(task.threads)
            payload = self._payload(replace(task, threads=threads))
            ref = remote.options(num_cpus=threads, max_retries=self.max_retries, retry_exceptions=[OSError],
                                 name=f"llmtk-sweep {task.label}").remote(payload)
            pending[ref] = (task, time.perf_counter())
            started(task)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task, t0 = pending.pop(ref)
                    try:
                        result, files = ray.get(ref)
                    except Exception as e:
                        yield Outcome(task, error=_ray_error(e, self.max_retries), seconds=time.perf_counter() - t0)
                        continue
                    try:
                        for role, data in files.items():
                            _write_output(task.outputs[role], data)
                    except OSError as e:
                        yield Outcome(task, error=describe(e), seconds=time.perf_counter() - t0)
                        continue
                    yield Outcome(task, result=result, seconds=time.perf_counter() - t0)
        finally:
            # Ctrl-C or an error on the driver: a joined cluster would otherwise run the rest for nobody
            for ref in pending:
                ray.cancel(ref, force=True)

    def _payload(self, task: Task) -> dict[str, Any]:
        """What travels to the worker: absolute paths (shared storage), or object references to
        the inputs' bytes and the outputs' file names (object storage; each input put once)."""
        if self.storage == "shared":
            return {"task": replace(task, inputs={k: Path(v).absolute() for k, v in task.inputs.items()},
                                    outputs={k: Path(v).absolute() for k, v in task.outputs.items()}),
                    "objects": None}
        import numpy as np
        import ray

        objects = {}
        for role, path in task.inputs.items():
            st = Path(path).stat()
            key = (str(Path(path).absolute()), st.st_size, st.st_mtime_ns)
            if key not in self._put:
                self._put[key] = ray.put(np.fromfile(path, dtype=np.uint8))
            objects[role] = (Path(path).name, self._put[key])
        return {"task": task, "objects": objects}


def _run_on_worker(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The Ray task: run one `Task` on a worker; with object storage, in a temporary folder."""
    from llmtk.model._blas import threads as blas_threads

    task: Task = payload["task"]
    objects = payload["objects"]
    if objects is None:
        with blas_threads(task.threads):
            return task.fn(**task.args, **task.inputs, **task.outputs), {}
    import ray

    work = Path(tempfile.mkdtemp(prefix="llmtk-sweep-"))
    try:
        inputs = {}
        for role, (name, ref) in objects.items():
            data = ref if not isinstance(ref, ray.ObjectRef) else ray.get(ref)
            (work / "in").mkdir(exist_ok=True)
            inputs[role] = work / "in" / f"{role}-{name}"
            data.tofile(inputs[role])
        outputs = {role: work / "out" / Path(path).name for role, path in task.outputs.items()}
        (work / "out").mkdir()
        with blas_threads(task.threads):
            result = task.fn(**task.args, **inputs, **outputs)
        return result, {role: path.read_bytes() for role, path in outputs.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_output(path: Path, data: bytes) -> None:
    from llmtk.outputs import write_bytes_atomic

    write_bytes_atomic(path, data)


def _ray_error(e: BaseException, retries: int) -> str:
    """A failed Ray task as one line: the task's own exception, or what became of its worker."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return describe(cause)
    kind = type(e).__name__
    if kind in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ActorDiedError"):
        return f"{kind}: its worker died {retries + 1} times (killed, out of memory or node lost)"
    return describe(e)

