# throng container image: a static binary on distroless/static (nonroot).
#
#   docker build -t throng:dev --build-arg VERSION=$(git describe --tags --always) .
#   docker run -p 5672:5672 -p 1883:1883 -p 8080:8080 -p 8161:8161 throng:dev
#
# Stage 1 builds with CGO disabled (no libc needed at run time).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/throngmq/throng/internal/app.Version=${VERSION}" \
      -o /out/throng ./cmd/throng \
 && mkdir -p /out/data

# Stage 2: distroless/static has CA certificates (bridges to TLS remotes),
# /tmp, tzdata and the nonroot user (65532); no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/throng /usr/local/bin/throng
COPY --from=build --chown=65532:65532 /out/data /var/lib/throng
USER 65532:65532
WORKDIR /var/lib/throng
ENV THRONG_DATA_DIR=/var/lib/throng
# 5672 AMQP, 5671 AMQPS, 1883 MQTT, 8883 MQTTS, 8080 HTTP, 8443 HTTPS,
# 8161 admin API and console (/healthz, /readyz, /metrics), 6222 cluster routes.
EXPOSE 5672 5671 1883 8883 8080 8443 8161 6222
VOLUME ["/var/lib/throng"]
ENTRYPOINT ["/usr/local/bin/throng"]
CMD ["serve"]
