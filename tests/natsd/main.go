// Command natsd runs a JetStream-enabled nats-server (the real server from
// github.com/nats-io/nats-server/v2) as a process of its own, so fault tests
// can kill -9 it and start it again on the same port and store directory.
//
//	natsd -port 4222 -dir /tmp/js
//
// It prints "ready <url>" once it accepts connections and shuts down
// cleanly on SIGTERM or SIGINT (exit code 0).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	port := flag.Int("port", 4222, "client port")
	dir := flag.String("dir", "", "JetStream store directory (required)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "natsd: -dir is required")
		os.Exit(2)
	}
	opts := &server.Options{Host: "127.0.0.1", Port: *port, JetStream: true, StoreDir: *dir, NoSigs: true, NoLog: true}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsd: not ready after 30s")
		os.Exit(1)
	}
	fmt.Printf("ready nats://127.0.0.1:%d\n", *port)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
}
