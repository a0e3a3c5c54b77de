"""Generated gRPC stubs of protos/qos/v1/qos.proto; do not edit, run scripts/gen-protos."""
