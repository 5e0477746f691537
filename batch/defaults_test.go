package batch

import (
	"testing"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
)

// An archiver or a runner given zero values runs as one given the default
// configuration.
func TestZeroConfigTakesTheConfigurationDefaults(t *testing.T) {
	def := config.Default()
	var a ArchiverConfig
	a.defaults()
	if a.MaxRows != def.Archive.MaxRows || a.MaxBytes != def.Archive.MaxBytes || a.MaxDelay != def.Archive.MaxDelay.D() {
		t.Errorf("archiver: max rows %d, max bytes %d, max delay %v; the configuration's defaults are %d, %d, %v",
			a.MaxRows, a.MaxBytes, a.MaxDelay, def.Archive.MaxRows, def.Archive.MaxBytes, def.Archive.MaxDelay.D())
	}
	if a.FetchSize > a.MaxRows || a.FetchWait > a.MaxDelay || a.FetchSize <= 0 || a.FetchWait <= 0 {
		t.Errorf("archiver: fetch size %d, fetch wait %v: want positive and within max rows %d, max delay %v", a.FetchSize, a.FetchWait, a.MaxRows, a.MaxDelay)
	}
	views, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(RunnerConfig{}, nil, views, nil, &config.Catalog{}, nil, nil)
	if r.cfg.Epoch != def.Epoch.D() {
		t.Errorf("runner: epoch %v; the configuration's default is %v", r.cfg.Epoch, def.Epoch.D())
	}
}
