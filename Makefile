# The commands a new user needs. `make run` starts Rookery on a throwaway local Redis;
# `make test` runs every check CI runs.
.PHONY: run test bench fmt lint unit

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

fmt:
	cargo fmt --all
