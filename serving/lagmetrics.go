package serving

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/query"
)

// partitionLagTimeout bounds the reads of one scrape of
// braid_partition_lag.
const partitionLagTimeout = 5 * time.Second

// partitionLag is the collector of braid_partition_lag: at every scrape,
// for each partition of every stream, its log's last record minus the
// speed layer's position (layer="speed"; a partition without a position
// has folded nothing; none for a stream without live views) and minus the archiver's checkpoint
// (layer="archive"). A scrape reads each partition's log end, position
// and checkpoint once (a round trip each); a figure that cannot be read is
// left out, and the rest is still collected.
type partitionLag struct {
	desc    *prometheus.Desc
	cat     *config.Catalog
	log     EventLog
	speed   query.SpeedStatus // nil: no speed series
	archive ArchiveStatus     // nil: no archive series
}

func newPartitionLag(cat *config.Catalog, log EventLog, speed query.SpeedStatus, archive ArchiveStatus) *partitionLag {
	return &partitionLag{cat: cat, log: log, speed: speed, archive: archive,
		desc: prometheus.NewDesc("braid_partition_lag", "Log records of a stream's partition not yet folded by the speed layer (layer=speed) or written to the lake (layer=archive), read at the scrape.",
			[]string{"stream", "partition", "layer"}, nil)}
}

func (c *partitionLag) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *partitionLag) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), partitionLagTimeout)
	defer cancel()
	for _, name := range c.cat.StreamOrder {
		var pos query.StreamSpeed
		speedOK := false
		if c.speed != nil && len(c.cat.SpeedViewsOf(name)) > 0 { // no speed state of a stream without live views
			if p, err := c.speed.StreamStatus(ctx, name); err == nil {
				pos, speedOK = p, true
			}
		}
		for p := range c.cat.Streams[name].Partitions {
			info, err := c.log.Info(ctx, name, p)
			if err != nil {
				continue
			}
			part := strconv.Itoa(p)
			if speedOK {
				var seq uint64
				if p < len(pos.Parts) {
					seq = pos.Parts[p].Seq
				}
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(lag(info.LastSeq, seq)), name, part, "speed")
			}
			if c.archive != nil {
				if cp, err := c.archive.ArchiveCheckpoint(ctx, name, p); err == nil {
					ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(lag(info.LastSeq, cp.Seq)), name, part, "archive")
				}
			}
		}
	}
}
