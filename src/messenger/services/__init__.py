"""Use cases and multi-shard protocols: what the API (and the tools) call.

The placement rule: one shard transaction = one store method (`messenger.storage`); a
multi-shard protocol, or a use case over several stores = a service here
(`AccountService.register`, reserve → write → confirm, is the model). A service checks inputs
with the domain's rules, calls the stores and publishes what changed; it holds no SQL and
knows nothing of HTTP. `messenger.bootstrap` builds the services; nothing here builds a
connection.
"""
