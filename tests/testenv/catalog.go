package testenv

import (
	"fmt"
	"slices"
	"strings"
)

// Catalog is the part of a braid config a test declares, below the sections
// a Stack writes itself (data_dir, namespace, http, nats, redis): the
// settings tests tune and the streams and views, in order. YAML renders it.
// It is a value: a test takes one of the standard catalogs (E2E, Orders,
// Clicks…) and changes what is specific to it.
type Catalog struct {
	Epoch   string // epoch:, e.g. "1s"; "" leaves the default
	Batch   string // the keys of batch:, e.g. "every: 0"; "" leaves the section out
	Archive string // the keys of archive:, e.g. "max_rows: 1000, max_delay: 300ms"
	Speed   string // the keys of speed:, e.g. "batch_size: 500, max_wait: 50ms"
	Extra   string // further top-level sections (auth:, dlq:…), verbatim YAML
	Streams []Stream
	Views   []View
}

// Stream is one stream of a Catalog.
type Stream struct {
	Name      string
	Time      string   // the time field
	ID        string   // the id field; "" for none
	Lateness  string   // allowed_lateness; "" for the default
	MaxFuture string   // max_future; "" for the default
	Fields    []string // "name: type", in order
	Required  []string
	PII       []string // "field: mode", e.g. "email: hash"
	// Partitions and PartitionBy: partitions and partition_by (0 and "":
	// left out, one partition).
	Partitions  int
	PartitionBy string
}

// View is one view of a Catalog.
type View struct {
	Name     string
	Stream   string
	Window   string
	Hop      string   // "" for a tumbling window
	GroupBy  []string // nil leaves group_by out; empty writes group_by: []
	Where    string
	Measures []string // "name: expression", in order
	Tier     string   // "" leaves tier out (live); "live" or "batch"
}

// Fast are the settings most end-to-end tests run with: 1-second epochs,
// no scheduled batch runs (the tests run them), and small archive writes
// and speed micro-batches so that an answer follows the events quickly.
func Fast() Catalog {
	return Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Archive: "max_rows: 1000, max_delay: 300ms",
		Speed:   "batch_size: 500, max_wait: 50ms",
	}
}

// E2E is the end-to-end catalog: Fast settings, the Orders stream and the
// OrdersByCountry and BuyersHourly views.
func E2E() Catalog {
	c := Fast()
	c.Streams = []Stream{Orders()}
	c.Views = []View{OrdersByCountry(), BuyersHourly()}
	return c
}

// Orders is the orders stream of the end-to-end tests: deduplicated by
// order_id, 3 h of allowed lateness, the email hashed.
func Orders() Stream {
	return Stream{
		Name:     "orders",
		Time:     "ts",
		ID:       "order_id",
		Lateness: "3h",
		Fields:   []string{"ts: time", "order_id: string", "country: string", "amount: float", "items: int", "email: string"},
		Required: []string{"ts", "country", "amount"},
		PII:      []string{"email: hash"},
	}
}

// OrdersByCountry is the 1-minute view of orders by country with the
// exact measures (count, sum, avg, max, min).
func OrdersByCountry() View {
	return View{
		Name:    "orders_by_country",
		Stream:  "orders",
		Window:  "1m",
		GroupBy: []string{"country"},
		Measures: []string{
			"orders: count()",
			"revenue: sum(amount)",
			"basket_avg: avg(amount)",
			"biggest: max(amount)",
			"smallest: min(amount)",
			"items: sum(items)",
		},
	}
}

// BuyersHourly is the hourly view of orders with the sketch measures
// (distinct buyers, median amount).
func BuyersHourly() View {
	return View{
		Name:     "buyers_hourly",
		Stream:   "orders",
		Window:   "1h",
		Measures: []string{"buyers: count_distinct(email)", "median: quantile(amount, 0.5)"},
	}
}

// Clicks is a stream of page clicks, deduplicated by id, whose events need
// a page.
func Clicks() Stream {
	return Stream{
		Name:     "clicks",
		Time:     "ts",
		ID:       "id",
		Fields:   []string{"ts: time", "id: string", "page: string", "ms: int"},
		Required: []string{"page"},
	}
}

// ClicksByPage counts the clicks of each page by the minute.
func ClicksByPage() View {
	return View{
		Name:     "clicks_by_page",
		Stream:   "clicks",
		Window:   "1m",
		GroupBy:  []string{"page"},
		Measures: []string{"clicks: count()"},
	}
}

// Without is the stream without the named fields (in its fields, required
// fields and PII modes).
func (s Stream) Without(fields ...string) Stream {
	s.Fields = withoutKeys(s.Fields, fields)
	s.PII = withoutKeys(s.PII, fields)
	s.Required = slices.DeleteFunc(slices.Clone(s.Required), func(f string) bool { return slices.Contains(fields, f) })
	return s
}

// With is the stream with more fields ("name: type") after its own.
func (s Stream) With(fields ...string) Stream {
	s.Fields = append(slices.Clone(s.Fields), fields...)
	return s
}

// Without is the view without the named measures.
func (v View) Without(measures ...string) View {
	v.Measures = withoutKeys(v.Measures, measures)
	return v
}

// withoutKeys drops the "key: value" entries whose key is in keys.
func withoutKeys(entries, keys []string) []string {
	return slices.DeleteFunc(slices.Clone(entries), func(e string) bool {
		k, _, _ := strings.Cut(e, ":")
		return slices.Contains(keys, strings.TrimSpace(k))
	})
}

// Stream returns the named stream of the catalog for a change in place; it
// panics when there is none (a mistake in the test).
func (c *Catalog) Stream(name string) *Stream {
	for i := range c.Streams {
		if c.Streams[i].Name == name {
			return &c.Streams[i]
		}
	}
	panic(fmt.Sprintf("testenv: no stream %q in the catalog", name))
}

// View returns the named view of the catalog for a change in place; it
// panics when there is none.
func (c *Catalog) View(name string) *View {
	for i := range c.Views {
		if c.Views[i].Name == name {
			return &c.Views[i]
		}
	}
	panic(fmt.Sprintf("testenv: no view %q in the catalog", name))
}

// YAML renders the catalog as config YAML.
func (c Catalog) YAML() string {
	var b strings.Builder
	if c.Epoch != "" {
		fmt.Fprintf(&b, "epoch: %s\n", c.Epoch)
	}
	for _, sec := range []struct{ name, keys string }{{"batch", c.Batch}, {"archive", c.Archive}, {"speed", c.Speed}} {
		if sec.keys != "" {
			fmt.Fprintf(&b, "%s: { %s }\n", sec.name, sec.keys)
		}
	}
	if c.Extra != "" {
		b.WriteString(strings.TrimSuffix(c.Extra, "\n") + "\n")
	}
	if len(c.Streams) > 0 {
		b.WriteString("streams:\n")
		for _, s := range c.Streams {
			b.WriteString(s.yaml())
		}
	}
	if len(c.Views) > 0 {
		b.WriteString("views:\n")
		for _, v := range c.Views {
			b.WriteString(v.yaml())
		}
	}
	return b.String()
}

func (s Stream) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n    time: %s\n", s.Name, s.Time)
	if s.ID != "" {
		fmt.Fprintf(&b, "    id: %s\n", s.ID)
	}
	if s.Lateness != "" {
		fmt.Fprintf(&b, "    allowed_lateness: %s\n", s.Lateness)
	}
	if s.MaxFuture != "" {
		fmt.Fprintf(&b, "    max_future: %s\n", s.MaxFuture)
	}
	if s.Partitions != 0 {
		fmt.Fprintf(&b, "    partitions: %d\n", s.Partitions)
	}
	if s.PartitionBy != "" {
		fmt.Fprintf(&b, "    partition_by: %s\n", s.PartitionBy)
	}
	fmt.Fprintf(&b, "    fields: { %s }\n", strings.Join(s.Fields, ", "))
	if len(s.Required) > 0 {
		fmt.Fprintf(&b, "    required: [%s]\n", strings.Join(s.Required, ", "))
	}
	if len(s.PII) > 0 {
		fmt.Fprintf(&b, "    pii: { %s }\n", strings.Join(s.PII, ", "))
	}
	return b.String()
}

func (v View) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n    stream: %s\n    window: %s\n", v.Name, v.Stream, v.Window)
	if v.Hop != "" {
		fmt.Fprintf(&b, "    hop: %s\n", v.Hop)
	}
	if v.GroupBy != nil { // an empty group_by is written: group_by: []
		fmt.Fprintf(&b, "    group_by: [%s]\n", strings.Join(v.GroupBy, ", "))
	}
	if v.Where != "" {
		fmt.Fprintf(&b, "    where: %q\n", v.Where)
	}
	if v.Tier != "" {
		fmt.Fprintf(&b, "    tier: %s\n", v.Tier)
	}
	b.WriteString("    measures:\n")
	for _, m := range v.Measures {
		fmt.Fprintf(&b, "      %s\n", m)
	}
	return b.String()
}
