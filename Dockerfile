# syntax=docker/dockerfile:1
#
# The IoT Hub emulator image, and the seed tutorial's two apps.
#
#   docker build -t iothub-emulator .                         # the emulator (the last stage)
#   docker build --target seed-apps -t iothub-seed-apps .     # simulated_device, send_cloud_to_device_message
#   docker compose up --build                                 # both, wired together (docker-compose.yml)
#
# The emulator is configured with IOTHUB_EMULATOR_* variables (every flag has one, see
# `iothub-emulator --help`), so the HEALTHCHECK, which runs the same binary, reads the same
# settings and probes the right port. It listens on every interface, keeps its CA, certificates
# and state in the /data volume, and serves HTTPS on 443, MQTT/TLS on 8883, AMQP/TLS on 5671 and
# plain HTTP (health, /_emulator/ca.pem) on 8088. The official SDKs cannot use other ports for
# most operations: publish them unchanged.
#
# tests/tests/compose_file.rs checks this file against the emulator's flags and the compose file.

# --- build -------------------------------------------------------------------------------------
# rust:1.95 on Debian 12, so the binaries run on the Debian 12 distroless base below (same glibc).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p iothub-emulator --bin iothub-emulator \
 && cargo build --release --locked -p iothub-device --example simulated_device \
 && cargo build --release --locked -p iothub-service --example send_cloud_to_device_message \
 && mkdir -p /out \
 && cp target/release/iothub-emulator /out/iothub-emulator \
 && cp target/release/examples/simulated_device /out/simulated_device \
 && cp target/release/examples/send_cloud_to_device_message /out/send_cloud_to_device_message

# --- the seed tutorial's apps (docker-compose.yml runs each with its own entrypoint) -----------
FROM gcr.io/distroless/cc-debian12 AS seed-apps
COPY --from=build /out/simulated_device /usr/local/bin/simulated_device
COPY --from=build /out/send_cloud_to_device_message /usr/local/bin/send_cloud_to_device_message
ENTRYPOINT ["/usr/local/bin/simulated_device"]

# --- the emulator (default target) -------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12 AS emulator
COPY --from=build /out/iothub-emulator /usr/local/bin/iothub-emulator
ENV IOTHUB_EMULATOR_HOST=0.0.0.0 \
    IOTHUB_EMULATOR_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 443 8883 5671 8088
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=6 \
    CMD ["/usr/local/bin/iothub-emulator", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/iothub-emulator"]
CMD ["--host", "0.0.0.0"]
