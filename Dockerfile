FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN go build -o /braid ./cmd/braid

FROM debian:bookworm-slim
COPY --from=build /braid /usr/local/bin/braid
ENTRYPOINT ["braid"]
