# The commands a new user needs. `make run` starts Rookery on a throwaway local Redis;
# `make test` runs every check CI runs.
.PHONY: run test bench fuzz fmt lint unit

run:
	scripts/run.sh

test:
	scripts/ensure-tools.sh --rust-components
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	cargo test --workspace --all-features
	scripts/validate-deploy.sh
	scripts/examples.sh

bench:
	scripts/bench.sh

# Every RPC fed many more seeded hostile, mutated and garbage requests than `make test` sends.
fuzz:
	scripts/ensure-tools.sh
	for seed in 1 2 3 4 5; do \
		ROOKERY_FUZZ_SEED=$$seed ROOKERY_FUZZ_CASES=$${ROOKERY_FUZZ_CASES:-200} \
			cargo test --workspace --all-features --test e2e -- fuzz:: || exit 1; \
	done

fmt:
	cargo fmt --all
