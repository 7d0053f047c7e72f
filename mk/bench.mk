# Benchmarks (issue 8). Include from the Makefile: `include mk/bench.mk`.
# make bench        full run: own 5-shard cluster (var/bench/cluster, reused), 100k users,
#                   open-loop steps at 10,000 connections after the closed-loop phases,
#                   every scenario at 100 / 1,000 / 10,000 connections, ceilings, report
# make bench-smoke  every part of the harness on a short load, under 2 minutes
# Reports: var/bench/<UTC timestamp>/report.md (+ report.json, PNG charts).
# Extra options: make bench BENCH_ARGS="--duration 60 --levels 100,1000 --scenarios mixed"
BENCH_ARGS ?=

.PHONY: bench bench-smoke

bench: venv
	$(MESSENGER) bench --open-loop $(BENCH_ARGS)

bench-smoke: venv
	$(MESSENGER) bench --smoke $(BENCH_ARGS)

# make bench-reshard        shards add (5 → 6) under a mixed load, measured: own cluster
#                           (var/bench/reshard-cluster, made afresh each run), 1,000,000 users
# make bench-reshard-smoke  the same with 20,000 users and short idle/after stretches
# Reports: var/bench/reshard-<UTC timestamp>/report.md (+ report.json, reshard.png).
# Extra options: make bench-reshard RESHARD_ARGS="--users 200000 --rate 400"
RESHARD_ARGS ?=

.PHONY: bench-reshard bench-reshard-smoke

bench-reshard: venv
	$(MESSENGER) bench --reshard $(RESHARD_ARGS)

bench-reshard-smoke: venv
	$(MESSENGER) bench --reshard --smoke $(RESHARD_ARGS)
