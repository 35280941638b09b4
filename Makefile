# The commands a new user needs. `make run` starts Rookery on a throwaway local Redis;
# `make test` runs every check CI runs.
.PHONY: run test bench fuzz chaos fmt lint unit

run:
	scripts/run.sh

test:
	scripts/ensure-tools.sh --rust-components
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	# The binaries first: the e2e tests drive the `rookery` CLI as a user would.
	cargo build --workspace --all-features --bins
	cargo test --workspace --all-features
	scripts/validate-deploy.sh
	scripts/examples.sh
	scripts/test-python.sh
	scripts/test-typescript.sh

bench:
	scripts/bench.sh

# Every RPC fed many more seeded hostile, mutated and garbage requests than `make test` sends.
fuzz:
	scripts/ensure-tools.sh
	for seed in 1 2 3 4 5; do \
		ROOKERY_FUZZ_SEED=$$seed ROOKERY_FUZZ_CASES=$${ROOKERY_FUZZ_CASES:-200} \
			cargo test --workspace --all-features --test e2e -- fuzz:: || exit 1; \
	done

# The fault suites as a longer soak: Redis hung, the network to it blackholed or cut, Redis at
# maxmemory, Cluster and Sentinel failovers; ten times more callers per case, several rounds.
chaos:
	scripts/ensure-tools.sh
	for round in 1 2 3; do \
		ROOKERY_FAULT_ATTEMPTS=$${ROOKERY_FAULT_ATTEMPTS:-500} \
			cargo test --workspace --all-features --test e2e -- lease_faults:: memory::at_maxmemory cluster:: sentinel:: || exit 1; \
	done

fmt:
	cargo fmt --all
