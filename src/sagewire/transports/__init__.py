"""Transports on top of the core: the gRPC server today, a REST bridge later."""
