package serving_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// partArchive is an archiver's checkpoint per partition; a partition in
// fail cannot be read.
type partArchive struct {
	pos  map[int]serving.ArchivePosition
	fail map[int]error
}

func (a partArchive) ArchiveCheckpoint(_ context.Context, _ string, p int) (serving.ArchivePosition, error) {
	if err := a.fail[p]; err != nil {
		return serving.ArchivePosition{}, err
	}
	return a.pos[p], nil
}

// fixedOwners holds each role's owners, or fails.
type fixedOwners struct {
	owners map[string][]string
	err    error
}

func (o fixedOwners) PartitionOwners(_ context.Context, role, _ string, n int) ([]string, error) {
	if o.err != nil {
		return nil, o.err
	}
	if len(o.owners[role]) != n {
		return nil, fmt.Errorf("asked for %d owners of %s", n, role)
	}
	return o.owners[role], nil
}

// statusPartition is a partition's entry of /v1/status.
type statusPartition struct {
	Partition    int     `json:"partition"`
	Owner        *string `json:"owner"`
	LastSeq      *uint64 `json:"last_seq"`
	Position     *uint64 `json:"position"`
	Lag          *uint64 `json:"lag"`
	MaxEventTime *string `json:"max_event_time"`
	Watermark    *string `json:"watermark"`
	Archive      struct {
		Status       string  `json:"status"`
		Position     uint64  `json:"position"`
		Lag          *uint64 `json:"lag"`
		Owner        *string `json:"owner"`
		CoveredUntil *string `json:"covered_until"`
	} `json:"archive"`
}

type statusOfStream struct {
	Log struct {
		LastSeq uint64 `json:"last_seq"`
		Msgs    uint64 `json:"msgs"`
	} `json:"log"`
	Speed struct {
		Seq          uint64  `json:"seq"`
		Lag          *uint64 `json:"lag"`
		MaxEventTime *string `json:"max_event_time"`
		Watermark    *string `json:"watermark"`
	} `json:"speed"`
	Archive struct {
		Status       string  `json:"status"`
		Seq          uint64  `json:"seq"`
		Lag          *uint64 `json:"lag"`
		CoveredUntil *string `json:"covered_until"`
	} `json:"archive"`
	OwnersError *string           `json:"owners_error"`
	Partitions  []statusPartition `json:"partitions"`
}

// TestStatusPartitions: /v1/status of a stream of three partitions lists
// each partition (its log's end, the speed position, lag, watermark and
// owner, the archiver's checkpoint and owner) and adds them up in the
// stream's log, speed and archive parts; a partition whose checkpoint
// cannot be read, and owners that cannot be read, are reported in place.
// /metrics has braid_partition_lag of every partition. The log is a real
// JetStream log, its records counted here from where the stream's logic
// sends each event.
func TestStatusPartitions(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(serving.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	schema := doc.Components.Schemas["Status"].Value

	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id", Partitions: 3,
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt},
		Required: []string{"device"}, AllowedLateness: 30 * time.Second}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	v := testView(t, s, "v", time.Minute, 0)
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	log, err := eventlog.Open(t.Context(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), Memory: true, Partitions: map[string]int{"orders": 3}})
	if err != nil {
		t.Fatal(err)
	}

	// Where each event goes: one request per event, one record each.
	now := time.Now().UnixMilli()
	var bodies []string
	records := make([]uint64, 3)
	for i := range 12 {
		body := fmt.Sprintf(`{"id":"e%d","ts":%d,"device":"web"}`, i, now)
		ev, _, err := s.Prepare([]byte(body), 0)
		if err != nil {
			t.Fatal(err)
		}
		records[s.PartitionOf(&ev)]++
		bodies = append(bodies, body)
	}
	for p, n := range records {
		if n < 2 {
			t.Fatalf("partition %d gets %d records of %v: pick other ids", p, n, records)
		}
	}

	// The speed layer: partition 0 a record behind, 1 caught up (quiet
	// for long: it does not hold the watermark back), 2 without a
	// position.
	arrival := now - 1_000
	parts := []query.PartSpeed{
		{Found: true, Seq: records[0] - 1, Watermark: now - 5_000, LastArrival: arrival},
		{Found: true, Seq: records[1], Watermark: now - 90_000, LastArrival: arrival - 2*30_000 - 1},
		{},
	}
	speed := statusSpeed{pos: query.SpeedOf(parts)}
	archive := partArchive{pos: map[int]serving.ArchivePosition{
		0: {Seq: records[0], CoveredUntil: now - 2_000},
		1: {Seq: 1, CoveredUntil: now - 9_000},
		2: {Seq: records[2] - 1, CoveredUntil: now - 3_000},
	}}
	owners := fixedOwners{owners: map[string][]string{serving.RoleSpeed: {"speed-a", "", "speed-b"}, serving.RoleArchive: {"arch-1", "arch-1", ""}}}

	serve := func(opts serving.Options) *httptest.Server {
		opts.Catalog, opts.Registry, opts.Logger, opts.Log = testCatalog(s, v), prometheus.NewRegistry(), discardLogger(), log
		srv, err := serving.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		h := httptest.NewServer(srv.Handler())
		t.Cleanup(h.Close)
		return h
	}
	status := func(h *httptest.Server) statusOfStream {
		t.Helper()
		code, _, body := get(t, h.URL+"/v1/status")
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		var answer any
		if err := json.Unmarshal(body, &answer); err != nil {
			t.Fatal(err)
		}
		if err := schema.VisitJSON(answer); err != nil {
			t.Fatalf("the answer does not match the Status schema: %v\n%s", err, body)
		}
		checkSortedKeys(t, body)
		var st struct {
			Streams map[string]statusOfStream `json:"streams"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		return st.Streams["orders"]
	}

	h := serve(serving.Options{SpeedStatus: speed, Archive: archive, Owners: owners})
	for _, b := range bodies {
		if code, _, out := postJSON(t, h.URL+"/v1/streams/orders/events", b); code != 200 {
			t.Fatalf("ingest: %d %s", code, out)
		}
	}
	st := status(h)
	if len(st.Partitions) != 3 {
		t.Fatalf("%d partitions: %+v", len(st.Partitions), st)
	}
	positions := []uint64{records[0] - 1, records[1], 0}
	var sumLag, sumArchLag, sumArch uint64
	for p, e := range st.Partitions {
		wantLag := records[p] - positions[p]
		archLag := records[p] - archive.pos[p].Seq
		sumLag, sumArchLag, sumArch = sumLag+wantLag, sumArchLag+archLag, sumArch+archive.pos[p].Seq
		if e.Partition != p || e.LastSeq == nil || *e.LastSeq != records[p] || e.Lag == nil || *e.Lag != wantLag {
			t.Errorf("partition %d: %+v; want last_seq %d, lag %d", p, e, records[p], wantLag)
		}
		if e.Archive.Status != "" || e.Archive.Position != archive.pos[p].Seq || e.Archive.Lag == nil || *e.Archive.Lag != archLag ||
			fmt.Sprint(deref(e.Archive.CoveredUntil)) != logic.FormatTime(archive.pos[p].CoveredUntil) {
			t.Errorf("partition %d archive: %+v; want position %d, lag %d", p, e.Archive, archive.pos[p].Seq, archLag)
		}
		if got, want := deref(e.Owner), owners.owners[serving.RoleSpeed][p]; got != want {
			t.Errorf("partition %d owner %q, want %q", p, got, want)
		}
		if got, want := deref(e.Archive.Owner), owners.owners[serving.RoleArchive][p]; got != want {
			t.Errorf("partition %d archive owner %q, want %q", p, got, want)
		}
	}
	for p, ps := range parts[:2] {
		e := st.Partitions[p]
		if e.Position == nil || *e.Position != ps.Seq || deref(e.MaxEventTime) != logic.FormatTime(ps.Watermark) || deref(e.Watermark) != logic.FormatTime(ps.Watermark-30_000) {
			t.Errorf("partition %d: %+v, want the position of %+v", p, e, ps)
		}
	}
	if e := st.Partitions[2]; e.Position != nil || e.Watermark != nil || e.MaxEventTime != nil {
		t.Errorf("partition 2 has no position: %+v", e)
	}
	total := records[0] + records[1] + records[2]
	if st.Log.LastSeq != total || st.Log.Msgs != total {
		t.Errorf("log %+v, want %d records", st.Log, total)
	}
	// The stream's watermark: partition 1 is quiet, partition 2 has none,
	// so partition 0's counts.
	if st.Speed.Seq != records[0]-1+records[1] || st.Speed.Lag == nil || *st.Speed.Lag != sumLag ||
		deref(st.Speed.Watermark) != logic.FormatTime(now-5_000-30_000) || deref(st.Speed.MaxEventTime) != logic.FormatTime(now-5_000) {
		t.Errorf("speed %+v; want seq %d, lag %d", st.Speed, records[0]-1+records[1], sumLag)
	}
	if st.Archive.Seq != sumArch || st.Archive.Lag == nil || *st.Archive.Lag != sumArchLag || deref(st.Archive.CoveredUntil) != logic.FormatTime(now-9_000) {
		t.Errorf("archive %+v; want seq %d, lag %d, covered until the earliest", st.Archive, sumArch, sumArchLag)
	}
	if st.OwnersError != nil {
		t.Errorf("owners error %q", *st.OwnersError)
	}
	want := map[string]float64{}
	for p := range 3 {
		want[fmt.Sprintf("orders/%d/speed", p)] = float64(records[p] - positions[p])
		want[fmt.Sprintf("orders/%d/archive", p)] = float64(records[p] - archive.pos[p].Seq)
	}
	if got := partitionLags(t, h); !maps.Equal(got, want) {
		t.Errorf("braid_partition_lag %v, want %v", got, want)
	}

	// Partition 1's checkpoint and the owners cannot be read.
	down := errors.New("down")
	archive.fail = map[int]error{1: down}
	h = serve(serving.Options{SpeedStatus: speed, Archive: archive, Owners: fixedOwners{err: down}})
	st = status(h)
	if st.Archive.Status != "error" || st.Partitions[1].Archive.Status != "error" || st.Partitions[0].Archive.Status != "" || st.Partitions[0].Archive.Position != archive.pos[0].Seq {
		t.Errorf("one checkpoint unreadable: archive %+v, partitions %+v", st.Archive, st.Partitions)
	}
	if st.OwnersError == nil || !strings.Contains(*st.OwnersError, "down") || st.Partitions[0].Owner != nil || st.Partitions[0].Archive.Owner != nil {
		t.Errorf("owners unreadable: %v, %+v", st.OwnersError, st.Partitions[0])
	}
	delete(want, "orders/1/archive")
	if got := partitionLags(t, h); !maps.Equal(got, want) {
		t.Errorf("braid_partition_lag without partition 1's checkpoint: %v, want %v", got, want)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// partitionLags scrapes braid_partition_lag: stream/partition/layer ->
// value.
func partitionLags(t *testing.T, h *httptest.Server) map[string]float64 {
	t.Helper()
	code, _, body := get(t, h.URL+"/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		rest, ok := strings.CutPrefix(line, "braid_partition_lag{")
		if !ok {
			continue
		}
		labels, val, _ := strings.Cut(rest, "} ")
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k], _ = strconv.Unquote(v)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[l["stream"]+"/"+l["partition"]+"/"+l["layer"]] = f
	}
	return out
}
