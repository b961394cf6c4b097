"""The grpc.aio transport: servicers, the error edge, health, reflection, server assembly."""
