package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/lake"
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
	data, err := os.ReadFile(*path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg, err := config.Inspect(data, os.Getenv)
	var list []config.Error
	var verrs *config.Errors
	switch {
	case errors.As(err, &verrs):
		list = verrs.List
	case err != nil:
		return err
	}
	if cfg != nil {
		list = append(list, lakeErrors(cfg)...)
	}
	if len(list) > 0 {
		config.SortByLine(list)
		for _, e := range list {
			fmt.Fprintf(os.Stderr, "%s: %s\n", *path, e)
		}
		return fmt.Errorf("%d error(s) in %s", len(list), *path)
	}
	fmt.Printf("%s: ok (%d streams, %d views)\n", *path, len(cfg.Streams), len(cfg.Views.Names))
	return nil
}

// lakeErrors checks the declared field types of every stream against the
// lake under data_dir, if there is one, without writing to it: each field
// the lake's files cannot be read as is an error at its key.
func lakeErrors(cfg *config.Config) []config.Error {
	if cfg.DataDir == "" {
		return nil // reported by the validation
	}
	lk, err := lake.OpenReadOnly(lakeDir(cfg))
	if err != nil {
		return []config.Error{cfg.ErrorAt("data_dir", err.Error(), "")}
	}
	names := make([]string, 0, len(cfg.Streams))
	for name := range cfg.Streams {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []config.Error
	for _, name := range names {
		cs, err := lk.CheckFields(name, cfg.FieldTypes(name))
		if err != nil {
			out = append(out, cfg.ErrorAt("streams."+name, fmt.Sprintf("cannot read the lake: %v", err), "the lake is "+lakeDir(cfg)))
			continue
		}
		for _, c := range cs {
			out = append(out, cfg.ErrorAt("streams."+name+".fields."+c.Field, c.Problem(), c.WaysOut()))
		}
	}
	return out
}
