package embedded_test

import (
	"context"
	"log/slog"
	"os/exec"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/storage/embedded"
)

// TestStartRedisRelativeDir: braid up's redis-server starts with a relative
// data_dir (the demo's ./data) and answers.
func TestStartRedisRelativeDir(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not on PATH (make test needs it: apt-get install redis-server)")
	}
	t.Chdir(t.TempDir())
	ctx := context.Background()
	r, err := embedded.StartRedis(ctx, "data/redis", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Dev {
		t.Fatal("the embedded development server answered, not redis-server")
	}
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("get: %q %v", got, err)
	}
}
