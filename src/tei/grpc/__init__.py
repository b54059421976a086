"""gRPC layer: TEI's `tei.v1` services over the Engine. Knows protobuf messages and status codes, never tensors.

Imported only when gRPC is switched on (`--grpc`, `--grpc-port`): the generated modules register
`tei.v1` in protobuf's default descriptor pool, where tei-client's stubs register the same names.
"""
