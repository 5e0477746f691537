package main

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:s3cret@h:6379/0":                "redis://:xxxxx@h:6379/0",
		"rediss://braid:s3cret@h:6380/0":          "rediss://braid:xxxxx@h:6380/0",
		"redis://h:6379/0":                        "redis://h:6379/0",
		"nats://a:p1@n1:4222,nats://b:p2@n2:4222": "nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:4222",
	} {
		got := redactURL(in)
		if got != want || strings.Contains(got, "s3cret") {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
