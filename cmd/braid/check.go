package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/braid-data/braid/logic/config"
)

func cmdCheck(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("--config is required")
	}
	cfg, err := config.Load(*path)
	var verrs *config.Errors
	if errors.As(err, &verrs) {
		for _, e := range verrs.List {
			fmt.Fprintf(os.Stderr, "%s: %s\n", *path, e)
		}
		return fmt.Errorf("%d error(s) in %s", len(verrs.List), *path)
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s: ok (%d streams, %d views)\n", *path, len(cfg.Streams), len(cfg.Views.Names))
	return nil
}
