"""The gateway core: resolve a route, validate, apply policies, call the AWS adapter.

Transport-neutral on purpose: nothing here imports grpc or HTTP frameworks, so the gRPC
servicers and a later REST bridge share one behaviour and one set of domain errors.
"""
