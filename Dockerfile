FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin courier

FROM debian:bookworm-slim
# Chromium and chromedriver for workers that drive a local browser (and the
# demo); workers pointed at a Selenium node (browser.webdriver_url) don't use them.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
        chromium chromium-driver postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/courier /usr/local/bin/courier
COPY config /etc/courier
ENV COURIER_CONFIG_DIR=/etc/courier
WORKDIR /var/lib/courier
ENTRYPOINT []
