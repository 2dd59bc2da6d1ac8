"""Plays the Functions host to the real v1 worker library, in its own Python 3.13 process.

Not a test module: tests/worker/test_real_worker.py runs it with .venv-worker313's python
(.ci/worker-venv). On 3.13 the host talks gRPC to the platform's proxy worker, which hands each
request to `azure_functions_runtime_v1`'s handlers (`worker_init_request`,
`functions_metadata_request`, `function_load_request`, `invocation_request`) as a small object
with `.request` (the StreamingMessage) and `.properties` ({"protos", "host"}). This script does
what the proxy does around them (the app root on sys.path and as working directory, the
library's thread pool) and calls the same handlers with the same protobuf messages, built from
the function.json files as the host builds them, without a gRPC channel.

Protocol: one JSON command per line on stdin, one JSON answer per line on stdout:
  {"op": "init", "app_root": "/path"}        -> {"status": "Success", "capabilities": {...}}
  {"op": "metadata"}                          -> {"status": ..., "use_default_metadata_indexing"}
  {"op": "load", "name": "FlushTrigger"}      -> {"status": ..., "exception": "..."|null}
  {"op": "invoke", "name": ..., "data": {"bytes": base64} | {"string": text},
   "trigger_metadata": {"Key": {"string"|"json": value}}}  -> {"status": ..., "exception": ...}
Anything the app or the library prints goes to stderr: stdout carries answers only.
"""
from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import json
import logging
import os
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import azure_functions_runtime_v1 as worker

PROTOS_PACKAGE = "worker_protos"


def load_protos() -> Any:
    """The host/worker protobuf messages (FunctionRpc.proto) the library's wheel ships under
    `tests/protos`, imported under another name so no `tests` package is involved."""
    spec = importlib.util.find_spec("azure_functions_runtime_v1")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent.parent / "tests" / "protos"
    package = types.ModuleType(PROTOS_PACKAGE)
    package.__path__ = [str(root)]
    sys.modules[PROTOS_PACKAGE] = package
    return importlib.import_module(f"{PROTOS_PACKAGE}.FunctionRpc_pb2")


class Request:
    """What the proxy worker hands the library: the StreamingMessage and its properties."""

    def __init__(self, name: str, message: Any, properties: dict[str, Any] | None = None):
        self.name = name
        self.request = message
        self.properties = properties or {}


class Host:
    def __init__(self) -> None:
        self.protos = load_protos()
        self.app_root = Path.cwd()
        self.function_ids: dict[str, str] = {}

    def _status(self, result: Any) -> dict[str, Any]:
        status = self.protos.StatusResult.Status.Name(result.status)
        exception = result.exception.message if result.HasField("exception") else None
        return {"status": status, "exception": exception}

    async def init(self, app_root: str) -> dict[str, Any]:
        p = self.protos
        self.app_root = Path(app_root).resolve()
        # what DependencyManager.prioritize_customer_dependencies does with the script root
        os.chdir(self.app_root)
        if str(self.app_root) not in sys.path:
            sys.path.append(str(self.app_root))
        message = p.StreamingMessage(request_id=str(uuid.uuid4()), worker_init_request=(
            p.WorkerInitRequest(host_version="4.1040.0", function_app_directory=str(
                self.app_root), worker_directory=str(Path(worker.__file__).parent),
                capabilities={"FunctionDataCache": "false"})))
        response = await worker.worker_init_request(
            Request("WorkerInitRequest", message, {"protos": p, "host": "127.0.0.1"}))
        worker.start_threadpool_executor()
        return {**self._status(response.result), "capabilities": dict(response.capabilities),
                "worker_version": response.worker_metadata.worker_version,
                "runtime_version": response.worker_metadata.runtime_version}

    async def metadata(self) -> dict[str, Any]:
        p = self.protos
        message = p.StreamingMessage(functions_metadata_request=p.FunctionsMetadataRequest(
            function_app_directory=str(self.app_root)))
        response = await worker.functions_metadata_request(
            Request("WorkerMetadataRequest", message))
        return {**self._status(response.result),
                "use_default_metadata_indexing": response.use_default_metadata_indexing}

    def _binding(self, binding: dict[str, Any]) -> Any:
        """BindingInfo from one function.json binding, as the host sends it."""
        info = self.protos.BindingInfo
        data_type = binding.get("dataType")
        return info(type=binding["type"],
                    direction=info.Direction.Value(binding.get("direction", "in")),
                    data_type=info.DataType.Value(data_type) if data_type else info.undefined)

    async def load(self, name: str) -> dict[str, Any]:
        p = self.protos
        folder = self.app_root / name
        doc = json.loads((folder / "function.json").read_text(encoding="utf-8"))
        function_id = self.function_ids.setdefault(name, str(uuid.uuid4()))
        metadata = p.RpcFunctionMetadata(
            name=name, directory=str(folder), function_id=function_id, language="python",
            script_file=str(folder / doc.get("scriptFile", "__init__.py")),
            entry_point=doc.get("entryPoint", ""), is_proxy=False,
            bindings={b["name"]: self._binding(b) for b in doc["bindings"]},
            raw_bindings=[json.dumps(b) for b in doc["bindings"]])
        message = p.StreamingMessage(function_load_request=p.FunctionLoadRequest(
            function_id=function_id, metadata=metadata))
        response = await worker.function_load_request(Request("FunctionsLoadRequest", message))
        return self._status(response.result)

    def _typed(self, value: dict[str, str]) -> Any:
        ((kind, data),) = value.items()
        if kind == "bytes":
            return self.protos.TypedData(bytes=base64.b64decode(data))
        return self.protos.TypedData(**{kind: data})

    async def invoke(self, name: str, data: dict[str, str],
                     trigger_metadata: dict[str, dict[str, str]]) -> dict[str, Any]:
        p = self.protos
        doc = json.loads((self.app_root / name / "function.json").read_text(encoding="utf-8"))
        trigger = next(b for b in doc["bindings"] if b["type"].endswith("Trigger"))
        request = p.InvocationRequest(
            invocation_id=str(uuid.uuid4()), function_id=self.function_ids[name],
            input_data=[p.ParameterBinding(name=trigger["name"], data=self._typed(data))],
            trigger_metadata={k: self._typed(v) for k, v in trigger_metadata.items()},
            trace_context=p.RpcTraceContext(trace_parent="00-" + "1" * 32 + "-" + "2" * 16
                                            + "-01", trace_state=""),
            retry_context=p.RetryContext(retry_count=0, max_retry_count=0))
        response = await worker.invocation_request(Request(
            "WorkerInvRequest", p.StreamingMessage(invocation_request=request)))
        return self._status(response.result)


async def serve(answers: Any) -> None:
    host = Host()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            return
        try:
            answer = await getattr(host, op)(**command)
        except Exception as exc:  # the driver itself failed: say so, keep serving
            answer = {"status": "DriverError", "exception": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # prints from the app or the library go to stderr
    sys.stdout = sys.stderr
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="worker %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(answers))
    worker.stop_threadpool_executor()


if __name__ == "__main__":
    main()
