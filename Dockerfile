# sagewire gRPC gateway. Build: docker build -t sagewire .
# Run:   docker run -p 50051:50051 -v $PWD/config:/config sagewire serve --config /config/sagewire.toml
FROM python:3.12.8-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/sagewire \
 && /opt/sagewire/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src src
COPY generated generated
RUN /opt/sagewire/bin/pip install --no-deps .

FROM python:3.12.8-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home sagewire
COPY --from=build /opt/sagewire /opt/sagewire
# BOTO_DISABLE_CRT: awscrt is installed for the HTTP/2 SDK, but botocore's pure-Python SigV4
# signer costs 6-8 % less CPU per call (docs/benchmarks.md).
ENV PATH=/opt/sagewire/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BOTO_DISABLE_CRT=true \
    SAGEWIRE_SERVER__LISTEN=0.0.0.0:50051
USER 10001
# gRPC; then the REST bridge, /metrics and the health-only maintenance listener, each served
# only when configured (rest.listen, telemetry.metrics_listen, server.maintenance_listen) on the
# ports deploy/k8s gives them.
EXPOSE 50051 8080 9464 8081
# The gRPC health service answers SERVING once ready and NOT_SERVING while draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["sagewire", "health", "--target", "127.0.0.1:50051"]
ENTRYPOINT ["sagewire"]
CMD ["serve"]
