package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
)

// TestStackConfig: the config a stack writes is the one braid reads: its
// namespace, data dir, HTTP address and servers, the body below them; a
// twin shares the deployment with a port and data dir of its own.
func TestStackConfig(t *testing.T) {
	s := NewStack(t, E2E().YAML(), WithNATS(), NATSKeys("publish_timeout: 1s"))
	cfg, err := config.Load(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Namespace != s.Namespace || cfg.DataDir != s.DataDir || "http://"+cfg.HTTP.Addr != s.Base {
		t.Errorf("config: namespace %q, data_dir %q, addr %q; stack %q, %q, %q", cfg.Namespace, cfg.DataDir, cfg.HTTP.Addr, s.Namespace, s.DataDir, s.Base)
	}
	if s.NATS == nil || cfg.NATS.URL != s.NATS.URL || cfg.NATS.PublishTimeout.D() != time.Second {
		t.Errorf("nats: %+v; stack server %+v", cfg.NATS, s.NATS)
	}
	if s.Redis == nil || cfg.Redis.URL != s.Redis.URL {
		t.Fatalf("redis: %+v; stack server %+v", cfg.Redis, s.Redis)
	}
	if err := s.Redis.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Errorf("the stack's redis-server: %v", err)
	}
	if _, js := s.NATS.JetStream(t); js == nil {
		t.Errorf("no JetStream")
	}
	if len(cfg.Views.Names) != len(E2E().Views) {
		t.Errorf("views %v", cfg.Views.Names)
	}

	tw := s.Twin()
	twin, err := config.Load(tw.Config)
	if err != nil {
		t.Fatal(err)
	}
	if twin.Namespace != cfg.Namespace || twin.NATS != cfg.NATS || twin.Redis != cfg.Redis || len(twin.Streams) != len(cfg.Streams) {
		t.Errorf("twin: %+v %+v %+v; first %+v %+v %+v", twin.Namespace, twin.NATS, twin.Redis, cfg.Namespace, cfg.NATS, cfg.Redis)
	}
	if tw.Config == s.Config || tw.Base == s.Base || twin.DataDir == cfg.DataDir || twin.HTTP.Addr == cfg.HTTP.Addr {
		t.Errorf("twin shares the config, port or data dir: %+v / %+v", tw, s)
	}

	bare := NewStack(t, Catalog{Streams: []Stream{Clicks()}, Views: []View{ClicksByPage()}}.YAML(), WithoutRedis())
	cfg, err = config.Load(bare.Config)
	if err != nil {
		t.Fatal(err)
	}
	if bare.Redis != nil || bare.NATS != nil || bare.NATSProc != nil || cfg.Redis.URL != "" || cfg.NATS.URL != "" || bare.Namespace == s.Namespace {
		t.Errorf("a stack without servers: %+v, config nats %+v redis %+v", bare, cfg.NATS, cfg.Redis)
	}
}

// TestStackUp: Up starts braid up ready to answer with the catalog's views,
// and `braid check` of the config counts its streams and views.
func TestStackUp(t *testing.T) {
	c := E2E()
	c.Streams = append(c.Streams, Clicks())
	c.Views = append(c.Views, ClicksByPage())
	s := Up(t, c.YAML())
	if s.Braid == nil {
		t.Fatal("no braid process")
	}
	resp, err := http.Get(s.Base + "/v1/views")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Views []struct {
			Name string `json:"name"`
		} `json:"views"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/views: %d %v", resp.StatusCode, err)
	}
	got := map[string]bool{}
	for _, v := range list.Views {
		got[v.Name] = true
	}
	for _, v := range c.Views {
		if !got[v.Name] {
			t.Errorf("braid up does not serve view %s: %+v", v.Name, list.Views)
		}
	}
	if len(list.Views) != len(c.Views) {
		t.Errorf("%d views served, %d declared", len(list.Views), len(c.Views))
	}
	out, code := RunBraid(t, "check", "--config", s.Config)
	if want := fmt.Sprintf("ok (%d streams, %d views)", len(c.Streams), len(c.Views)); code != 0 || !strings.Contains(out, want) {
		t.Errorf("braid check: exit %d, want %q:\n%s", code, want, out)
	}
	if err := s.Braid.Stop(t); err != nil {
		t.Errorf("braid up stop: %v", err)
	}
}
