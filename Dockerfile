# Image for every binary. The entrypoint is playhouse-server (the operator's
# Deployment passes only args to it); the operator's own Deployment overrides
# the command with playhouse-operator, and the chart's `helm test` Pod with
# playhouse-bench --once. Build and push: make docker-build docker-push IMG=...
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ ./cmd/playhouse-server ./cmd/playhouse-operator ./cmd/playhouse-bench

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/playhouse-server /out/playhouse-operator /out/playhouse-bench /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["playhouse-server"]
