# The fault suite (issue 13). Include from the Makefile: `include mk/chaos.mk`.
# make chaos        every fault under load on an own 3-shard cluster (var/chaos/cluster, reused),
#                   the primary outage held 360 s: about 20 minutes
# make chaos-quick  the same faults with short holds and a 20 s outage: a few minutes
# Reports: var/chaos/<UTC time>/report.md (+ report.json). Not part of `make test`.
# Extra options: make chaos CHAOS_ARGS="--faults primary-kill,partition --outage-seconds 120"
CHAOS_ARGS ?=

.PHONY: chaos chaos-quick

chaos: venv
	$(MESSENGER) chaos $(CHAOS_ARGS)

chaos-quick: venv
	$(MESSENGER) chaos --quick $(CHAOS_ARGS)
