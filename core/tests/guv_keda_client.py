"""A real gRPC client for guv's KEDA external scaler, generated at run time
from core/proto/externalscaler.proto with grpcio-tools.

usage: guv_keda_client.py ADDR PROTO_DIR OUT_DIR ROLE EXPECTED
Waits (up to 30 s) until GetMetrics reports EXPECTED for ROLE, then calls
every RPC once and prints one JSON object with what it got.
"""
import json
import sys
import time

from grpc_tools import protoc

addr, proto_dir, out_dir, role, expected = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", f"{proto_dir}/externalscaler.proto"])
if rc != 0:
    sys.exit(f"protoc failed with {rc}")
sys.path.insert(0, out_dir)

import grpc  # noqa: E402
import externalscaler_pb2 as pb  # noqa: E402
import externalscaler_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(addr)
grpc.channel_ready_future(channel).result(timeout=30)
stub = rpc.ExternalScalerStub(channel)
ref = pb.ScaledObjectRef(name="some-scaledobject", namespace="default", scalerMetadata={"role": role})

value = None
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    r = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=f"guv-{role}"), timeout=5)
    value = r.metricValues[0].metricValue
    if value == expected:
        break
    time.sleep(0.1)

spec = stub.GetMetricSpec(ref, timeout=5)
active = stub.IsActive(ref, timeout=5).result
stream = stub.StreamIsActive(ref, timeout=10)
first = next(iter(stream)).result
stream.cancel()
try:
    stub.IsActive(pb.ScaledObjectRef(name="nobody"), timeout=5)
    unknown = "OK"
except grpc.RpcError as e:
    unknown = e.code().name

print(json.dumps({
    "metric_value": value,
    "metric_name": r.metricValues[0].metricName,
    "spec_name": spec.metricSpecs[0].metricName,
    "spec_target": spec.metricSpecs[0].targetSize,
    "is_active": active,
    "stream_first": first,
    "unknown_role": unknown,
}))
