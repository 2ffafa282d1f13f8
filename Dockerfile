# Multi-stage build: the release binary on a slim, non-root runtime image.
#   docker build -t patchgate .
#   docker run --rm -p 8080:8080 -v "$PWD/proxy.toml:/etc/patchgate/proxy.toml:ro" patchgate
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bin patchgate

FROM debian:bookworm-slim
# CA roots for https upstreams and rediss:// (webpki roots are also built in).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin patchgate
COPY --from=build /src/target/release/patchgate /usr/local/bin/patchgate
COPY proxy.toml /etc/patchgate/proxy.toml
USER 10001:10001
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/patchgate", "--config", "/etc/patchgate/proxy.toml", "--log-format", "json"]
