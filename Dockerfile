# syntax=docker/dockerfile:1
#
# Switchyard as a container: one binary on Debian slim, running as a non-root user.
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 -v switchyard-data:/var/lib/switchyard switchyard
#   docker run --rm -v switchyard-data:/var/lib/switchyard switchyard keys create --name me
#
# The image's config is config/docker.toml (the mock model, SQLite in the volume); mount your own
# over /etc/switchyard/switchyard.toml, or point SWITCHYARD_CONFIG elsewhere, for real providers.

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds (BuildKit); the binary
# is copied out because the target directory is not part of the layer. --locked builds exactly
# the committed Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
    && install -D -m 0755 target/release/switchyard /out/switchyard

FROM debian:bookworm-slim
# ca-certificates: upstream providers are reached over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
    && install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard

COPY --from=builder /out/switchyard /usr/local/bin/switchyard
COPY config/docker.toml /etc/switchyard/switchyard.toml

# Every subcommand (serve, migrate, keys, models, check) finds this config without --config.
ENV SWITCHYARD_CONFIG=/etc/switchyard/switchyard.toml
# The SQLite database (keys, usage) lives here; a named volume keeps it across containers.
VOLUME ["/var/lib/switchyard"]
WORKDIR /var/lib/switchyard
USER switchyard:switchyard
EXPOSE 8080
# Liveness: GET /health/live; readiness (database reachable): GET /health/ready. The image has no
# curl, so probes belong to the orchestrator. SIGTERM drains in-flight requests and usage rows.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["serve"]
