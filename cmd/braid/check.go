package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

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
	fmt.Printf("%s: storage: %s\n", *path, storageKind(cfg))
	if w := piiKeyWarning(cfg, os.Getenv); w != "" {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", *path, w)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Alerts)) {
		if env := cfg.Alerts[name].Action.SecretEnv; env != "" && env != demoHookEnv && os.Getenv(env) == "" {
			fmt.Fprintf(os.Stderr, "%s: warning: alerts.%s.action.secret_env: %s is unset: braid up and braid serve will not start without the webhook's secret\n", *path, name, env)
		}
	}
	if cfg.Storage.IsS3() {
		if _, err := s3Config(cfg, os.Getenv); err != nil {
			fmt.Fprintf(os.Stderr, "%s: warning: %v; no process can reach the lake without the keys\n", *path, err)
		}
	}
	return nil
}

// piiKeyWarning says, when the catalog has PII fields and the variable named
// by pii_key_env is unset, that the separate layers will not start without
// it (only braid up keeps a key of its own); else "".
func piiKeyWarning(cfg *config.Config, getenv func(string) string) string {
	if _, err := cfg.PIIKey(config.PIIKeyShared, getenv); err == nil {
		return ""
	}
	v := "the variable named by pii_key_env"
	if cfg.PIIKeyEnv != "" {
		v = cfg.PIIKeyEnv + " (pii_key_env)"
	}
	return fmt.Sprintf("streams %s have PII fields and %s is unset: braid up keeps a key of its own in data_dir, "+
		"but the separate commands (serve, speed, archive, batch, ingest, replay, dlq, audit) will not start without it; "+
		"set it to the deployment's key, shared by every process", strings.Join(cfg.PIIStreams(), ", "), v)
}

// lakeErrors checks the declared field types of every stream against the
// lake under data_dir, if there is one, without writing to it: each field
// the lake's files cannot be read as is an error at its key.
func lakeErrors(cfg *config.Config) []config.Error {
	if cfg.DataDir == "" {
		return nil // reported by the validation
	}
	if _, err := s3Config(cfg, os.Getenv); cfg.Storage.IsS3() && err != nil {
		return nil // no keys to read the lake with: braid check warns of them
	}
	lk, err := openLake(cfg, os.Getenv, true, nil, nil)
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
			out = append(out, cfg.ErrorAt("streams."+name, fmt.Sprintf("cannot read the lake: %v", err), "the lake is "+storageKind(cfg)))
			continue
		}
		for _, c := range cs {
			out = append(out, cfg.ErrorAt("streams."+name+".fields."+c.Field, c.Problem(), c.WaysOut()))
		}
	}
	return out
}
