// Package configs holds Braid's example configurations. The demo one is
// embedded in the binary so `braid up --demo` works from anywhere.
package configs

import _ "embed"

// Demo is configs/demo.yaml: the configuration `make run` uses.
//
//go:embed demo.yaml
var Demo []byte
