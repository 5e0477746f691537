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
		DependsOn []string `yaml:"depends_on"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// composeVar is a ${NAME...} reference of docker compose.
var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)[^}]*\}`)

// TestComposeFile reads docker-compose.yml as docker compose would and
// checks the deployment it describes: every Braid process reads the same
// configuration with the lake and batch views on the S3 server of the
// file, no volume is shared between Braid processes (data_dir is a cache of
// each one's own), two serve replicas and two batch workers, and the
// configuration, with the file's environment, passes validation.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"nats", "redis", "s3"} {
		if f.Services[name].Image == "" {
			t.Errorf("service %s: no image", name)
		}
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
		if !slices.Contains(s.DependsOn, "nats") {
			t.Errorf("service %s does not depend on nats", name)
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
	}
	for src, users := range mounts {
		t.Errorf("volume %s mounted by Braid services %v: data_dir must be each process's own cache", src, users)
	}
	for layer, want := range map[string]int{"serve": 2, "batch": 2, "speed": 1, "archive": 1} {
		if replicas[layer] < want {
			t.Errorf("%d braid %s processes, want at least %d", replicas[layer], layer, want)
		}
	}
}
