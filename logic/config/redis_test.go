package config_test

import "testing"

// TestRedisSection: one server's URL, or a cluster's seeds with cluster:
// true; a cluster needs them, one server takes one URL.
func TestRedisSection(t *testing.T) {
	cases := []struct {
		doc      string
		vars     map[string]string
		key, msg string
		hint     string
		cluster  bool
	}{
		{doc: `redis: { url: "redis://r:6379/2" }`},
		{doc: `redis: { url: "redis://10.0.0.1:7000,redis://10.0.0.2:7000, rediss://u:p@10.0.0.3:7000/0", cluster: true }`, cluster: true},
		{doc: "", vars: map[string]string{"BRAID_REDIS_URL": "redis://a:7000,redis://b:7000", "BRAID_REDIS_CLUSTER": "true"}, cluster: true},
		{doc: `redis: { url: "redis://a:7000,redis://b:7000" }`, key: "redis.url", msg: "2 URLs for one server", hint: "redis.cluster: true"},
		{doc: `redis: { cluster: true }`, key: "redis.cluster", msg: "needs redis.url", hint: "separated by commas"},
		{doc: `redis: { url: "http://a:7000", cluster: true }`, key: "redis.url", msg: "redis:// or rediss://", hint: "separated by commas"},
		{doc: `redis: { url: "redis://a:7000,redis://b", cluster: true }`, key: "redis.url", msg: "needs a host and a port", hint: ""},
		{doc: `redis: { url: "redis://a:7000/3", cluster: true }`, key: "redis.url", msg: "only database 0", hint: ""},
	}
	for _, c := range cases {
		cfg := oneError(t, c.doc, c.vars, c.key, c.msg, c.hint)
		if c.key == "" && cfg != nil && cfg.Redis.Cluster != c.cluster {
			t.Errorf("%q %v: cluster %v", c.doc, c.vars, cfg.Redis.Cluster)
		}
	}
}
