# Braid: one binary, every layer. `make run` starts the demo; `make test`
# provisions what the tests need (scripts/provision) and runs every test tier
# against real servers (nats-server, redis-server, DuckDB, Parquet files).
GO      ?= go
BIN     := bin/braid
PKGS    := ./...

# The test tiers run the servers scripts/provision puts in bin/.
TESTENV := BRAID_BIN=$(CURDIR)/$(BIN) BRAID_NATS_SERVER=$(CURDIR)/bin/nats-server BRAID_VERSITYGW=$(CURDIR)/bin/versitygw

.PHONY: build provision run test test-short test-faults test-cluster fuzz bench lint clean

build:
	$(GO) build -o $(BIN) ./cmd/braid

## provision: redis-server and Chromium (apt-get as root, else a message
## saying how), Go-built servers into bin/; quick when all is there
provision:
	@scripts/provision

## run: the whole platform on embedded defaults with the demo generator (http://localhost:8080)
run: build
	./$(BIN) up --config configs/demo.yaml --demo

## test: unit, integration and end-to-end tests, all against real servers,
## then every fuzz target briefly
test: build provision
	$(TESTENV) $(GO) test -count=1 -timeout 18m -p 2 $(PKGS)
	$(MAKE) --no-print-directory fuzz FUZZTIME=short

test-short: build provision
	$(TESTENV) $(GO) test -count=1 -short $(PKGS)

## test-faults: the long fault-injection suite
test-faults: build provision
	$(TESTENV) BRAID_FAULT_TRIALS=$${BRAID_FAULT_TRIALS:-20} $(GO) test -count=1 -timeout 60m -run 'Fault' ./tests/

## test-cluster: the cluster test bed (tests/cluster: a NATS cluster, a
## Redis Cluster, S3, two processes of each layer), each fault many times
test-cluster: build provision
	$(TESTENV) BRAID_CLUSTER_TRIALS=$${BRAID_CLUSTER_TRIALS:-10} $(GO) test -count=1 -timeout 120m -v -run 'TestCluster' ./tests/cluster/

## fuzz: run each fuzz target for a while (FUZZTIME each)
FUZZTIME ?= 60s
# fuzztime is FUZZTIME, or with FUZZTIME=short the target's count of inputs
# (about two seconds each on two cores): a duration races Go's fuzz
# coordinator at its deadline and fails on a busy machine with a spurious
# "context deadline exceeded"; a count of inputs does not.
fuzztime = $(if $(filter short,$(FUZZTIME)),$(1),$(FUZZTIME))
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzPrepare$$' -fuzztime $(call fuzztime,30000x) ./logic/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMatchesEncodingJSON$$' -fuzztime $(call fuzztime,25000x) ./logic/
	$(GO) test -run '^$$' -fuzz '^FuzzAppendJSONString$$' -fuzztime $(call fuzztime,30000x) ./logic/
	$(GO) test -run '^$$' -fuzz '^FuzzWhere$$' -fuzztime $(call fuzztime,80000x) ./logic/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePick$$' -fuzztime $(call fuzztime,30000x) ./logic/
	$(GO) test -run '^$$' -fuzz '^FuzzWhereSQL$$' -fuzztime $(call fuzztime,5000x) ./batch/
	$(GO) test -run '^$$' -fuzz '^FuzzIngestBody$$' -fuzztime $(call fuzztime,150x) ./serving/
	$(GO) test -run '^$$' -fuzz '^FuzzQueryParams$$' -fuzztime $(call fuzztime,3000x) ./serving/
	$(GO) test -run '^$$' -fuzz '^FuzzMergePacked$$' -fuzztime $(call fuzztime,30000x) ./storage/speedstore/
	$(GO) test -run '^$$' -fuzz '^FuzzPacked$$' -fuzztime $(call fuzztime,2000x) ./storage/eventlog/

## bench: throughput and latency next to the raw NATS / Redis / DuckDB limits
bench: build provision
	BRAID_BENCH=1 $(TESTENV) $(GO) test -count=1 -timeout 30m -run '^TestBench' -v ./tests/bench/ | grep -E '^(bench:|---|ok|FAIL)'

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# clean keeps the servers in bin/ (scripts/provision would build them again).
clean:
	rm -rf $(BIN) data
