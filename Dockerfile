FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin courier

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/courier /usr/local/bin/courier
COPY config /etc/courier
ENV COURIER_CONFIG_DIR=/etc/courier
ENTRYPOINT []
