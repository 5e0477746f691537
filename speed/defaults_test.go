package speed_test

import (
	"testing"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
)

// Config fields left zero take the configuration's defaults, so a layer
// built without a configuration runs as `braid up` with the default one.
func TestDefaultsAreTheConfigurations(t *testing.T) {
	def := config.Default()
	if speed.DefaultBatchSize != def.Speed.BatchSize || speed.DefaultMaxWait != def.Speed.MaxWait.D() ||
		speed.DefaultMaxCells != def.Speed.MaxCells || speed.DefaultEpoch != def.Epoch.D() {
		t.Errorf("speed defaults: batch size %d, max wait %v, max cells %d, epoch %v; the configuration's: %d, %v, %d, %v",
			speed.DefaultBatchSize, speed.DefaultMaxWait, speed.DefaultMaxCells, speed.DefaultEpoch,
			def.Speed.BatchSize, def.Speed.MaxWait.D(), def.Speed.MaxCells, def.Epoch.D())
	}
}
