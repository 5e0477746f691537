// Package defaults is the one home of Braid's default values. The
// configuration's Default is built from them, its validation hints quote
// them, and every component given a zero value falls back to the same
// constant, so a component built without a configuration behaves as one
// built from the default configuration.
//
// The package imports nothing of Braid: every layer may read it, storage
// included, without importing the configuration.
//
// The names follow the configuration's keys: HTTPMaxInFlight is
// http.max_in_flight, SpeedMaxWait is speed.max_wait. Values with no key
// (a component's own bounds, such as the archiver's fetch size) say so.
package defaults

import "time"

// Top-level keys.
const (
	DataDir   = "./data"        // data_dir
	Namespace = "braid"         // namespace
	PIIKeyEnv = "BRAID_PII_KEY" // pii_key_env
	Epoch     = 10 * time.Second

	// MemoryLimit is memory_limit: 384 MiB of Go memory keeps `braid up`
	// under 512 MiB resident (with its code and DuckDB) at full ingest on
	// a laptop. A process whose live data outgrows it is slowed down by
	// the collector, never stopped: the limit is soft.
	MemoryLimit = 384 << 20
)

// http.*
const (
	HTTPAddr         = ":8080"
	HTTPMaxBodyBytes = 16 << 20
	HTTPMaxInFlight  = 64
	// HTTPIngestMemoryFactor: http.ingest_memory_bytes 0 means this many
	// times http.max_body_bytes.
	HTTPIngestMemoryFactor = 4
	HTTPReadTimeout        = time.Minute
	HTTPIdleTimeout        = 2 * time.Minute
	HTTPQueryCacheBytes    = 128 << 20
	// HTTPQueryMaxCells and HTTPQueryMaxRows: a week of minutes for a
	// hundred groups (about 300 and 500 bytes of memory each while an
	// answer is computed).
	HTTPQueryMaxCells = 1_000_000
	HTTPQueryMaxRows  = 1_000_000

	// LivePoll (no key) is the period of the live pushes' fallback poll of
	// the speed positions and of their batch-version check.
	LivePoll = time.Second
)

// nats.*
const (
	NATSReplicas       = 1
	NATSDedupWindow    = 2 * time.Minute
	NATSPublishTimeout = 5 * time.Second

	// PartitionIdle (no key): a partition whose last record arrived this
	// long before the latest of its stream's other partitions does not
	// hold the stream's watermark back (logic.StreamMark).
	PartitionIdle = 30 * time.Second
	// LeaseTTL (no key) is how long a partition's lease (and a process's
	// membership of the speed or archive group) lasts unrenewed: a
	// process killed without a goodbye gives its partitions up within it.
	LeaseTTL = 3 * time.Second
	// NATSStartWait (no key) is how long a process waits at start for
	// NATS to answer and for JetStream to take its streams (a server
	// still starting, a cluster still electing its leaders) before it
	// gives up.
	NATSStartWait = time.Minute
)

// batch.*
const (
	BatchEvery         = 15 * time.Minute
	BatchKeepVersions  = 3
	BatchSettleTimeout = time.Minute
	BatchWorkers       = 1 // work units a process computes at once

	// BatchKeepRuns (no key) is how many batch run records are kept.
	BatchKeepRuns = 500
	// BatchPointerTTL (no key) is how long a process answers from the
	// batch view version it read last when the views live on an object
	// store other than local files (serving asks for it on every query):
	// another process's publish shows within it.
	BatchPointerTTL = time.Second

	// The batch work queue and run lock (no keys yet): how long a work
	// unit stays with a worker that stops answering, how often it is
	// handed out, the dedup window of queued units, how long results are
	// kept, how often a run waiting for workers says so, and the lease of
	// the run lock shared across hosts.
	BatchUnitAckWait    = 30 * time.Second
	BatchUnitMaxDeliver = 5
	BatchUnitDedup      = 10 * time.Minute
	BatchResultsMaxAge  = 24 * time.Hour
	BatchUnitProgress   = 5 * time.Second
	BatchLockTTL        = 15 * time.Second
)

// speed.*
const (
	SpeedBatchSize = 2000
	SpeedMaxWait   = 25 * time.Millisecond
	SpeedMaxCells  = 50000

	// What a view's speed state costs in Redis (no keys): measured at most
	// once per SpeedCostEvery, on demand (/metrics, /v1/status), reading
	// per partition at most SpeedCostHashes cell hashes (a random sample
	// beyond, scaled up) and SpeedCostFields of their fields.
	SpeedCostEvery  = 30 * time.Second
	SpeedCostHashes = 256
	SpeedCostFields = 50000
)

// archive.*
const (
	ArchiveMaxRows  = 200000
	ArchiveMaxBytes = 32 << 20
	ArchiveMaxDelay = 5 * time.Second

	// The archiver's own bounds (no key).
	ArchiveFetchSize = 1000                   // events per fetch at most (at most ArchiveMaxRows)
	ArchiveFetchWait = 500 * time.Millisecond // longest wait of one fetch (at most the max delay)
	ArchiveIdleLag   = time.Second            // idle streams are covered until server time minus this
	ArchiveConsumer  = "archive"              // durable consumer name
	ArchiveRetry     = time.Second            // pause before a failed stream restarts

	// archive.compact and archive.target_file_bytes: small files of a
	// lake partition are merged into files of about this size.
	ArchiveCompact         = true
	ArchiveTargetFileBytes = 128 << 20

	// The archiver's upkeep (archive.upkeep_every; the retention period
	// has no key). Every ArchiveUpkeepEvery it trims
	// the log (nats.max_age) and, when the lake took commits since the
	// last time, compacts each stream and sweeps what compaction and
	// retention removed; every ArchiveRetentionEvery (and at start) it
	// drops the lake partitions past streams.S.retention.
	ArchiveUpkeepEvery    = time.Minute
	ArchiveRetentionEvery = time.Hour
)

// storage.*
const (
	// StorageAccessKeyEnv and StorageSecretKeyEnv are
	// storage.access_key_env and storage.secret_key_env: the variables
	// holding the object store's keys.
	StorageAccessKeyEnv = "BRAID_S3_ACCESS_KEY"
	StorageSecretKeyEnv = "BRAID_S3_SECRET_KEY"
)

// dlq.*
const (
	DLQMaxAge     = 7 * 24 * time.Hour
	DLQMaxRecords = 10_000
	DLQMaxLate    = 1_000_000
)

// streams.S.*
const (
	// StreamMinRetention is the shortest retention other than 0 (forever):
	// the lake drops whole days.
	StreamMinRetention = 24 * time.Hour

	// StreamMaxValueBytes is max_value_bytes: it bounds a string value when
	// the stream sets no limit.
	StreamMaxValueBytes = 64 << 10

	// WatermarkLead is how far past an event's arrival (the time the log
	// stored it) the watermark may move when the stream sets no
	// max_future.
	WatermarkLead = time.Minute
)

// The lake on object storage (no keys yet).
const (
	// LakeGrace is how long a file compaction or retention removed from
	// the lake stays in the store, for readers holding an older manifest.
	LakeGrace = time.Hour
	// CacheBytes bounds the local copies of objects a process keeps (lake
	// files for DuckDB), besides those in use.
	CacheBytes = 4 << 30
)

// entities.* (no keys yet)
const (
	// EntityAsOfReach is how far back an as_of may go and still be
	// answered from Redis: an entity keeps each key's events of its
	// longest over plus this; older as_of values are answered from the
	// lake.
	EntityAsOfReach = 7 * 24 * time.Hour
	// EntityExpiryMargin is added to what an entity keeps before a key
	// that saw no events expires from Redis (events dated ahead of
	// their arrival, clock skew).
	EntityExpiryMargin = 2 * 24 * time.Hour
	// EntityLookupMaxKeys bounds the keys of one POST :lookup.
	EntityLookupMaxKeys = 1000
)

// alerts.A.action.* and the alerts' machinery (no keys but those named).
const (
	// AlertAttempts, AlertBackoff and AlertTimeout are action.attempts,
	// action.backoff and action.timeout: a delivery is attempted this
	// many times, the first retry after the backoff, each next one after
	// twice the last (at most AlertMaxBackoff), each attempt bounded by
	// the timeout; then it goes to the alert's dead-letter queue. With
	// these defaults a receiver may be away about 9 minutes (1+2+…+256 s).
	AlertAttempts   = 10
	AlertBackoff    = time.Second
	AlertTimeout    = 10 * time.Second
	AlertMaxBackoff = 5 * time.Minute

	// The evaluated range (logic.Alert.AlertRange): windows that may still
	// take late events, AlertSpareWindows more, and two batch periods for
	// corrections (AlertOnDemandLookback without scheduled runs), at most
	// AlertMaxWindows windows.
	AlertSpareWindows     = 4
	AlertOnDemandLookback = time.Hour
	AlertMaxWindows       = 2000

	// AlertEvalTick is the longest an owned alert goes without an
	// evaluation (commits and batch versions start one at once); it also
	// slides the evaluated range.
	AlertEvalTick = time.Second
	// AlertFullEvery is how often an evaluation covers the whole range
	// between batch versions (a new batch version always does; the others
	// cover the windows that were not final at the last one).
	AlertFullEvery = 10 * time.Second
	// AlertStateEvery is how often the evaluator records the rows firing
	// now even when they did not change (GET /v1/alerts shows when).
	AlertStateEvery = 10 * time.Second

	// The alerts' JetStream streams: the outbox keeps decisions (and the
	// evaluators' state rebuilt from them) AlertOutboxMaxAge, deduplicated
	// by delivery id within AlertDedupWindow; dead letters are kept
	// AlertDLQMaxAge; AlertRecent outcomes of deliveries are kept per
	// alert for GET /v1/alerts.
	AlertOutboxMaxAge = 24 * time.Hour
	AlertDedupWindow  = 10 * time.Minute
	AlertDLQMaxAge    = 7 * 24 * time.Hour
	AlertRecent       = 50

	// AlertSenders is how many deliveries a process attempts at once.
	AlertSenders = 32
)
