// Command braid runs Braid: every layer in one process (`braid up`) or one
// layer per process (`braid speed`, `braid archive`, `braid batch`,
// `braid serve`), plus tools (check, batch run, replay, dlq, ingest).
// It only wires: the behaviour lives in logic, storage, speed, batch and serving.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, usage string
	run         func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"up", "up [--config F] [--demo]           every layer in one process", cmdUp},
		{"check", "check --config F                  validate a configuration", cmdCheck},
		{"batch", "batch [run] --config F [--view V] scheduled batch layer, or one run now", cmdBatch},
		{"speed", "speed --config F                  the speed layer alone", cmdSpeed},
		{"archive", "archive --config F                the archiver alone", cmdArchive},
		{"serve", "serve --config F                  the HTTP API alone", cmdServe},
		{"ingest", "ingest --config F --stream S --file PATH [--rebase-time]  bulk load a file", cmdIngest},
		{"replay", "replay --config F                 rebuild speed state from the log", cmdReplay},
		{"audit", "audit --config F --view V [--from T --to T]  recompute the speed layer's windows from the lake", cmdAudit},
		{"dlq", "dlq list|replay --config F --stream S  inspect or replay dead letters", cmdDLQ},
		{"version", "version                           print the version", func(context.Context, []string) error { fmt.Println("braid", version); return nil }},
	}
}

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return 2
	}
	for _, c := range commands() {
		if c.name == args[0] {
			if err := c.run(ctx, args[1:]); err != nil {
				fmt.Fprintln(os.Stderr, "braid "+c.name+":", err)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(os.Stderr, "braid: unknown command %q\n", args[0])
	usage()
	return 2
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: braid <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintln(os.Stderr, "  braid "+c.usage)
	}
}
