"""The trace half of an OpenTelemetry collector on 127.0.0.1, as a pytest fixture: keeps every span."""
from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from server_process import free_port


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """The trace half of an OpenTelemetry collector: keeps every span it receives."""

    def __init__(self):
        self.spans: list[tuple[dict, object]] = []  # (resource attributes, span)
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC's naming)
        with self.lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((attrs, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture()
def collector():
    sink = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    sink.endpoint = f"http://127.0.0.1:{port}"
    yield sink
    server.stop(None)
