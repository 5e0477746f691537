package tests

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/braid-data/braid/logic/config"
)

// composeFile is the part of docker-compose.yml the test reads.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Deploy      struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"deploy"`
		DependsOn  dependsOn `yaml:"depends_on"`
		Entrypoint []string  `yaml:"entrypoint"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// dependsOn is a service's depends_on: a list of services, or a mapping
// of services to conditions.
type dependsOn []string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		return n.Decode((*[]string)(d))
	}
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return err
	}
	for k := range m {
		*d = append(*d, k)
	}
	return nil
}

// composeVar is a ${NAME...} reference of docker compose.
var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)[^}]*\}`)

// TestComposeFile reads docker-compose.yml as docker compose would and
// checks the deployment it describes: a three-node NATS cluster, a
// six-node Redis Cluster (three masters with a replica each), every Braid
// process reading the same configuration on them (streams with three
// replicas, the Redis client in cluster mode) with the lake and batch
// views on the S3 server of the file, no volume shared between Braid
// processes (data_dir is a cache of each one's own), two processes of
// each layer, and the configuration, with the file's environment,
// passes validation.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	natsNodes, redisNodes := 0, 0
	for name, s := range f.Services {
		cmd := strings.Join(s.Command, " ")
		switch {
		case strings.HasPrefix(s.Image, "nats:"):
			natsNodes++
			if !strings.Contains(cmd, "-js") || !strings.Contains(cmd, "--cluster_name braid") || !strings.Contains(cmd, "--routes nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222") {
				t.Errorf("service %s: %q is not a JetStream node of the cluster", name, cmd)
			}
		case strings.HasPrefix(s.Image, "redis:") && len(s.Command) > 0:
			redisNodes++
			if !strings.Contains(cmd, "--cluster-enabled yes") {
				t.Errorf("service %s: %q is not a Redis Cluster node", name, cmd)
			}
		}
	}
	if natsNodes != 3 || redisNodes != 6 {
		t.Errorf("%d NATS and %d Redis nodes, want 3 and 6", natsNodes, redisNodes)
	}
	if create := strings.Join(f.Services["redis-cluster"].Entrypoint, " "); !strings.Contains(create, "--cluster create") || !strings.Contains(create, "--cluster-replicas 1") {
		t.Errorf("redis-cluster: %q does not create the cluster with a replica per master", create)
	}
	if f.Services["s3"].Image == "" {
		t.Error("service s3: no image")
	}
	replicas := map[string]int{}
	mounts := map[string][]string{} // named volume → Braid services mounting it
	for name, s := range f.Services {
		if s.Build == nil {
			continue
		}
		if len(s.Command) < 3 || s.Command[1] != "--config" {
			t.Errorf("service %s: command %q, want <layer> --config FILE", name, s.Command)
			continue
		}
		replicas[s.Command[0]] += max(s.Deploy.Replicas, 1)
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, "./") {
				if !strings.HasSuffix(v, ":ro") {
					t.Errorf("service %s: %s mounted writable", name, src)
				}
				continue
			}
			mounts[src] = append(mounts[src], name)
			_ = dst
		}
		if !strings.HasPrefix(s.Environment["BRAID_STORAGE_URL"], "s3://") {
			t.Errorf("service %s: BRAID_STORAGE_URL %q, want the bucket of the s3 service", name, s.Environment["BRAID_STORAGE_URL"])
		}
		for _, dep := range []string{"nats-1", "nats-2", "nats-3", "redis-cluster", "bucket"} {
			if !slices.Contains(s.DependsOn, dep) {
				t.Errorf("service %s does not depend on %s", name, dep)
			}
		}
		// The configuration it runs, with its environment (every
		// ${VAR} of the file given a value), is valid.
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = composeVar.ReplaceAllString(v, "x-"+strings.ToLower(k))
		}
		data, err := os.ReadFile("../configs/shop.yaml")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(data, func(k string) string { return env[k] })
		if err != nil {
			t.Errorf("service %s: configs/shop.yaml with its environment: %v", name, err)
			continue
		}
		if cfg.Storage.URL != s.Environment["BRAID_STORAGE_URL"] || cfg.Storage.Endpoint != s.Environment["BRAID_STORAGE_ENDPOINT"] || !cfg.Storage.PathStyle {
			t.Errorf("service %s: storage %+v, not the environment's", name, cfg.Storage)
		}
		if !cfg.Redis.Cluster || len(strings.Split(cfg.Redis.URL, ",")) != 3 || cfg.NATS.Replicas != 3 || len(strings.Split(cfg.NATS.URL, ",")) != 3 {
			t.Errorf("service %s: redis %+v, nats %s ×%d: want the clusters of the file, streams with three replicas", name, cfg.Redis, cfg.NATS.URL, cfg.NATS.Replicas)
		}
	}
	for src, users := range mounts {
		t.Errorf("volume %s mounted by Braid services %v: data_dir must be each process's own cache", src, users)
	}
	for layer, want := range map[string]int{"serve": 2, "batch": 2, "speed": 2, "archive": 2} {
		if replicas[layer] < want {
			t.Errorf("%d braid %s processes, want at least %d", replicas[layer], layer, want)
		}
	}
}
