package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/filesource"
)

// The event log is the log of the ingest use case, which HTTP, `braid
// ingest` and `braid dlq replay` share.
var _ ingest.Log = (*eventlog.Log)(nil)

// cmdIngest is `braid ingest --config F --stream S --file PATH`: a bulk load
// through the same logic and the same ingest path as HTTP, with a progress
// bar and a summary.
func cmdIngest(ctx context.Context, args []string) error {
	var stream, file, format string
	var rebase bool
	var batch int
	a, _, err := layerFlags("ingest", args, func(fs *flag.FlagSet) {
		fs.StringVar(&stream, "stream", "", "stream to load into")
		fs.StringVar(&file, "file", "", "NDJSON (.ndjson/.jsonl), JSON array (.json), CSV (.csv) or Parquet (.parquet) file; the text ones also gzip- or zstd-compressed (.ndjson.gz, .csv.zst)")
		fs.StringVar(&format, "format", "", "override the format taken from the extension")
		fs.BoolVar(&rebase, "rebase-time", false, "shift event times so the latest one is now (for demos)")
		fs.IntVar(&batch, "batch", 1000, "events per append to the log")
	})
	if err != nil {
		return err
	}
	defer a.Close()
	s, ok := a.cat.Streams[stream]
	if !ok {
		return fmt.Errorf("unknown stream %q", stream)
	}
	if file == "" {
		return errors.New("--file is required")
	}
	a.natsWait = -1 // a one-off command: NATS answers now, or it fails
	if _, err := a.open(ctx, deps{nats: true}); err != nil {
		return err
	}
	var shift int64
	if rebase {
		max, err := latestTime(file, format, s)
		if err != nil {
			return err
		}
		if max > 0 {
			shift = time.Now().UnixMilli() - max
		}
	}
	src, err := filesource.Open(file, format, s)
	if err != nil {
		return err
	}
	defer src.Close()
	_, total := src.Progress()
	bar := progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetWidth(30), progressbar.OptionShowCount(),
		progressbar.OptionSetDescription("ingest "+stream))
	ing := ingest.NewIngester(a.log, a.cat, a.reg)
	source := "file:" + filepath.Base(file)
	load, err := ing.NewLoad(stream, source)
	if err != nil {
		return err
	}
	start := time.Now()
	var accepted, rejected int
	var raws [][]byte
	send := func() error {
		if len(raws) == 0 {
			return nil
		}
		res, err := load.Ingest(ctx, raws)
		if err != nil {
			return err
		}
		accepted += res.Accepted
		rejected += res.Rejected
		raws = raws[:0]
		done, _ := src.Progress()
		rate := float64(accepted+rejected) / time.Since(start).Seconds()
		bar.Describe(fmt.Sprintf("ingest %s: %d events, %.0f ev/s", stream, accepted+rejected, rate))
		return bar.Set64(done)
	}
	for {
		raw, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if shift != 0 {
			raw = shiftTime(raw, s, shift)
		}
		raws = append(raws, raw)
		if len(raws) >= batch {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if err := send(); err != nil {
		return err
	}
	if err := load.Close(ctx); err != nil {
		return err
	}
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	secs := time.Since(start).Seconds()
	fmt.Printf("ingested %s into %s: accepted=%d rejected=%d (dead-lettered) in %.1fs (%.0f events/s)\n",
		file, stream, accepted, rejected, secs, float64(accepted+rejected)/secs)
	return nil
}

// latestTime is the largest valid event time in a file (a first pass for
// --rebase-time).
func latestTime(file, format string, s *logic.Stream) (int64, error) {
	src, err := filesource.Open(file, format, s)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	var max int64
	for {
		raw, err := src.Next()
		if err == io.EOF {
			return max, nil
		}
		if err != nil {
			return 0, err
		}
		if ev, _, err := s.Prepare(raw, 0); err == nil && ev.Time > max {
			max = ev.Time
		}
	}
}

// shiftTime moves a raw event's time by shift ms; invalid events stay as
// they are (they will be rejected with their reason).
func shiftTime(raw []byte, s *logic.Stream, shift int64) []byte {
	ev, _, err := s.Prepare(raw, 0)
	if err != nil {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if dec.Decode(&obj) != nil {
		return raw
	}
	obj[s.Fields[s.TimeField].Name] = ev.Time + shift
	out, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return out
}
