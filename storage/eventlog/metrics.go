package eventlog

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// consumerCollector reads the durable consumers' state from JetStream at
// every scrape, so the figures are the server's, not a layer's guess.
type consumerCollector struct {
	l          *Log
	streams    []string
	pending    *prometheus.Desc
	ackPending *prometheus.Desc
}

// ConsumerCollector returns a Prometheus collector of every durable
// consumer of the streams (the speed layer's, the archiver's):
// braid_consumer_pending (records not yet delivered) and
// braid_consumer_ack_pending (delivered, not yet acknowledged), labelled
// by stream, partition and consumer. A stream that cannot be read is
// skipped.
func (l *Log) ConsumerCollector(streams []string) prometheus.Collector {
	labels := []string{"stream", "partition", "consumer"}
	return &consumerCollector{l: l, streams: streams,
		pending:    prometheus.NewDesc("braid_consumer_pending", "Records in the log not yet delivered to the consumer.", labels, nil),
		ackPending: prometheus.NewDesc("braid_consumer_ack_pending", "Records delivered to the consumer and not yet acknowledged.", labels, nil),
	}
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
}

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, stream := range c.streams {
		for p := range c.l.Partitions(stream) {
			s, err := c.l.js.Stream(ctx, c.l.StreamName(stream, p))
			if err != nil {
				continue
			}
			part := strconv.Itoa(p)
			lister := s.ListConsumers(ctx)
			for info := range lister.Info() {
				ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), stream, part, info.Name)
				ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), stream, part, info.Name)
			}
		}
	}
}
