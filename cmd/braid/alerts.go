package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/braid-data/braid/serving/alerts"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/alertbox"
	"github.com/braid-data/braid/storage/leases"
)

// newAlerts builds the alerts' evaluation and delivery: the outbox and
// dead-letter queues in NATS, each alert evaluated by one serving process
// at a time (leases in Redis, role "alerts"), over the query engine eng.
func (a *app) newAlerts(eng *query.Engine) (*alerts.Service, error) {
	if a.js == nil || a.rdb == nil {
		return nil, errors.New("alerts need NATS and Redis")
	}
	logger := a.logger.With("layer", "alerts")
	// A delivery stays with a worker for twice the longest attempt (and
	// a margin) before another one attempts it again.
	// The outbox keeps decisions at least as long as the longest span an
	// evaluator rebuilds its state for (an hour more).
	ackWait, span := time.Duration(0), time.Duration(0)
	now := time.Now().UnixMilli()
	for _, al := range a.cat.Alerts {
		ackWait = max(ackWait, al.Timeout)
		from, to := al.AlertRange(now, a.cfg.Batch.Every.D())
		span = max(span, time.Duration(to-from)*time.Millisecond+time.Hour)
	}
	var box *alertbox.Box
	ctx := context.Background()
	err := a.untilNATSReady(ctx, "open the alerts' streams", func() (err error) {
		box, err = alertbox.Open(ctx, a.js, alertbox.Options{Namespace: a.cfg.Namespace, Replicas: a.cfg.NATS.Replicas,
			AckWait: 2*ackWait + 5*time.Second, MaxAge: span, Logger: logger})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open the alerts' streams: %w", err)
	}
	shares := leases.New(a.rdb, leases.Options{Namespace: a.cfg.Namespace, Role: "alerts", TakeAtOnce: a.allLayers, Logger: logger})
	return alerts.New(alerts.Options{Catalog: a.cat, Source: eng, Outbox: box, Deliveries: box, DLQ: box, Journal: box,
		Shares: alertShares{shares}, BatchEvery: a.cfg.Batch.Every.D(), Owner: shares.Owner(), Getenv: os.Getenv,
		Logger: logger, Registry: a.reg})
}

// alertShares is the alerts' Shares over a leases group: one lease per
// alert.
type alertShares struct{ g *leases.Group }

func (s alertShares) Run(ctx context.Context, names []string, work func(ctx context.Context, alert string) error) error {
	parts := make([]leases.Partition, len(names))
	for i, n := range names {
		parts[i] = leases.Partition{Stream: n}
	}
	return s.g.Run(ctx, parts, func(ctx context.Context, p leases.Partition) error { return work(ctx, p.Stream) })
}
